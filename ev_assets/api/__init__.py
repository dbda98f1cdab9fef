"""The events API (`ev-awareness serve`): the spec's `GET /v1/ev-charging-events`, read-only."""
