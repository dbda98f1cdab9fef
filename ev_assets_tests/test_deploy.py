"""The Kubernetes deployment under deploy/, checked as far as a machine without a cluster or a Docker
daemon can: the image's install steps run (deploy/image-install.sh), every manifest is valid against
the Kubernetes API schemas (kubernetes-validate), and the Dagster instance the Helm values imply
(K8sRunLauncher, the queued run coordinator with its limits, the PostgreSQL storage) loads in a real
DagsterInstance. What stays unchecked is in docs/kubernetes.md."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import dagster as dg
import kubernetes_validate
import pytest
import yaml

from ev_assets.settings import Settings, environment_variable

from .conftest import POSTGRES_URL, _postgres_database

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
# The oldest Kubernetes release still in upstream support when this was written; the manifests use
# nothing newer.
KUBERNETES_VERSION = "1.31"
RELEASE, NAMESPACE = "dagster", "ev"


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


# --- the image ---------------------------------------------------------------------------------


def test_the_image_install_steps_build_an_environment_that_imports_the_code_location():
    done = subprocess.run(
        ["bash", str(DEPLOY / "image-install.sh")], capture_output=True, text=True, timeout=170, cwd="/"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "image install steps: ok (4 steps" in done.stdout
    assert "at schema" in done.stdout  # the migration Job's command ran from the installed package


def test_the_image_runs_as_a_non_root_user_and_installs_without_the_dev_group():
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    uv_runs = [line for line in lines if line.startswith("RUN uv ")]
    assert uv_runs and all("--frozen" in line and "--no-dev" in line for line in uv_runs)


# --- the manifests -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path):
    documents = _documents(path)
    assert documents
    for document in documents:
        # strict: a misspelt or misplaced field (which the API server would drop silently) fails too.
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_validation_catches_a_broken_manifest():
    deployment = next(d for d in _documents(DEPLOY / "k8s" / "receiver.yaml") if d["kind"] == "Deployment")
    misplaced = copy.deepcopy(deployment)
    misplaced["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"httpGet": {"path": "/health"}}
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    for broken in (misplaced, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _containers() -> dict[str, dict]:
    return {
        container["name"]: container
        for path in MANIFESTS
        for doc in _documents(path)
        if doc["kind"] in ("Deployment", "Job")
        for container in doc["spec"]["template"]["spec"]["containers"]
    }


def test_the_services_probe_the_routes_their_apps_serve():
    from ev_assets.api.app import ApiConfig, create_app
    from ev_assets.receiver.app import ReceiverConfig
    from ev_assets.receiver.app import create_app as create_receiver

    containers = _containers()
    assert {"receiver", "api", "live", "db-upgrade"} <= set(containers)
    for name in ("receiver", "api", "live"):
        assert containers[name]["livenessProbe"]["httpGet"] and containers[name]["readinessProbe"]["httpGet"]
    receiver_routes = {route.path for route in create_receiver(ReceiverConfig.from_settings(Settings())).routes}
    api_routes = {route.path for route in create_app(ApiConfig.from_settings(Settings())).routes}
    for name, routes in (("receiver", receiver_routes), ("api", api_routes)):
        for probe in ("livenessProbe", "readinessProbe"):
            assert containers[name][probe]["httpGet"]["path"] in routes, (name, probe)
    assert containers["api"]["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert containers["receiver"]["command"][:2] == ["ev-awareness", "receive"]
    assert containers["api"]["command"][:2] == ["ev-awareness", "serve"]
    assert containers["db-upgrade"]["command"] == ["ev-awareness", "db", "upgrade"]


def test_the_config_map_holds_real_settings_and_no_secret():
    config = next(d for d in _documents(DEPLOY / "k8s" / "config.yaml") if d["kind"] == "ConfigMap")
    settings_names = {environment_variable(name) for name in Settings.model_fields}
    project_keys = {key for key in config["data"] if key.startswith("EV_")}
    assert project_keys and project_keys <= settings_names, project_keys - settings_names
    secrets = {"EV_WAREHOUSE_URL", "EV_DAGSTER_STORAGE_URL", "EV_RECEIVER_TOKEN_SHA256S", "EV_API_KEY_SHA256S"}
    assert not secrets & set(config["data"])
    # Every pod takes the secrets by reference, from the one Secret docs/kubernetes.md creates.
    for container in _containers().values():
        assert {"secretRef": {"name": "ev-assets-secrets"}} in container["envFrom"]


# --- the Helm values ---------------------------------------------------------------------------


def test_the_values_hold_no_secret_and_name_the_ones_they_use():
    values = _values()
    assert values["generatePostgresqlPasswordSecret"] is False and values["global"]["postgresqlSecretName"]
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlPassword"] == ""
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["envSecrets"] == [{"name": "ev-assets-secrets"}]
    assert set(deployment["env"]) == {"EV_FEED_SENSOR_INTERVAL_S", "EV_LOAD_SENSOR_INTERVAL_S"}
    assert deployment["codeServerArgs"] == ["--module-name", "ev_assets.definitions"]
    assert deployment["image"]["tag"] != "latest"


def instance_config(values: dict, kubeconfig: Path | None = None) -> dict:
    """The dagster.yaml the chart renders from these values (its templates configmap-instance.yaml and
    helpers/_instance.tpl, chart 1.13, for the keys the values set). With a kubeconfig, the launcher
    loads it instead of the in-cluster configuration, which only exists inside a pod."""
    postgres = values["postgresql"]
    storage = {
        "postgres_db": {
            "username": postgres["postgresqlUsername"],
            "password": {"env": "DAGSTER_PG_PASSWORD"},  # from the Secret global.postgresqlSecretName
            "hostname": postgres["postgresqlHost"],
            "db_name": postgres["postgresqlDatabase"],
            "port": postgres["service"]["port"],
            "params": postgres.get("postgresqlParams", {}),
        }
    }
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher_config = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": launcher.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": f"{RELEASE}",
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "env_config_maps": [item["name"] for item in launcher["envConfigMaps"]],
        "env_secrets": [item["name"] for item in launcher["envSecrets"]],
        "run_k8s_config": {"container_config": launcher["runK8sConfig"]["containerConfig"]},
    }
    if kubeconfig is not None:
        launcher_config.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    daemon = values["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    monitoring, retries = daemon["runMonitoring"], daemon["runRetries"]
    return {
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", "config": storage},
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": storage,
        },
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": storage,
        },
        "scheduler": {"module": "dagster.core.scheduler", "class": "DagsterDaemonScheduler"},
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher_config},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                "max_concurrent_runs": queued["maxConcurrentRuns"],
                "tag_concurrency_limits": queued["tagConcurrencyLimits"],
            },
        },
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "max_runtime_seconds": monitoring["maxRuntimeSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
        },
        "run_retries": {
            "enabled": retries["enabled"],
            "max_retries": retries["maxRetries"],
            "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"],
        },
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none, namespace: ev}}]
current-context: none
"""


@pytest.mark.skipif(not POSTGRES_URL, reason="needs EV_TEST_POSTGRES_URL (the instance's storage is PostgreSQL)")
def test_the_instance_the_values_imply_loads_with_the_k8s_launcher_and_the_run_queue(tmp_path, monkeypatch):
    import sqlalchemy as sa
    from dagster_k8s import K8sRunLauncher

    url, drop = _postgres_database()
    try:
        values = _values()
        database = sa.engine.make_url(url)
        # The cluster's database server is this machine's test server; everything else as the values say.
        values["postgresql"].update(
            postgresqlHost=database.host,
            postgresqlUsername=database.username,
            postgresqlDatabase=database.database,
            postgresqlParams={},
            service={"port": database.port or 5432},
        )
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG)
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config(values, kubeconfig)))
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("DAGSTER_PG_PASSWORD", database.password or "")
        with dg.DagsterInstance.get() as instance:
            launcher = instance.run_launcher
            assert isinstance(launcher, K8sRunLauncher)
            assert launcher.job_namespace == NAMESPACE
            assert launcher.env_secrets == ["ev-assets-secrets"]
            coordinator = instance.run_coordinator
            assert isinstance(coordinator, dg.QueuedRunCoordinator)
            assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 8
            shard_limit = {"key": "ev/shard", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
            assert instance.get_concurrency_config().run_queue_config.tag_concurrency_limits == [shard_limit]
            assert instance.run_monitoring_enabled and instance.run_retries_enabled
            assert instance.run_retries_max_retries == 3
            # The storage is real: a run recorded through it reads back.
            run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job(), tags={"ev/shard": "3"})
            assert instance.get_run_by_id(run.run_id).tags["ev/shard"] == "3"
    finally:
        drop()


def _rehydrate(section: dict):
    from dagster._serdes.config_class import ConfigurableClassData

    data = ConfigurableClassData(section["module"], section["class"], yaml.safe_dump(section.get("config", {})))
    return data.rehydrate(object)


def test_the_launcher_and_the_run_queue_load_without_storage_and_a_wrong_key_is_refused(tmp_path):
    """The classes the values configure, built from the rendered config alone (no PostgreSQL needed):
    a key the queued coordinator does not know is refused, so the load above is a real check."""
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster_k8s import K8sRunLauncher

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    config = instance_config(_values(), kubeconfig)
    assert isinstance(_rehydrate(config["run_launcher"]), K8sRunLauncher)
    assert isinstance(_rehydrate(config["run_coordinator"]), dg.QueuedRunCoordinator)
    misspelt = copy.deepcopy(config["run_coordinator"])
    misspelt["config"]["tag_concurrency_limit"] = misspelt["config"].pop("tag_concurrency_limits")
    with pytest.raises(DagsterInvalidConfigError):
        _rehydrate(misspelt)


def test_the_kubernetes_fields_of_the_values_are_valid_pod_fields():
    """The chart passes these fields into its pod specs unchanged: placed into a Pod, they must be
    valid there (the chart's own values.schema.json for 1.13 was not at hand; docs/kubernetes.md)."""
    values = _values()
    deployment = values["dagster-user-deployments"]["deployments"][0]
    run_container = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "from-values"},
        "spec": {
            "securityContext": deployment["podSecurityContext"],
            "volumes": deployment["volumes"],
            "containers": [
                {
                    "name": "code-server",
                    "image": f"{deployment['image']['repository']}:{deployment['image']['tag']}",
                    "imagePullPolicy": deployment["image"]["pullPolicy"],
                    "securityContext": deployment["securityContext"],
                    "resources": deployment["resources"],
                    "volumeMounts": deployment["volumeMounts"],
                    "ports": [{"containerPort": deployment["port"]}],
                },
                {"name": "run", "image": "run", **run_container},
            ],
        },
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
