"""The vendor's batch-export API: a client (OAuth2 client credentials, retries, polling) and the
conversion of an export's files into landing payload files."""
