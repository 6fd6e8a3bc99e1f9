"""The operators of the DAG. The Docker and Kubernetes providers are imported only when the config
selects them, so the local runner (one machine, the tests) needs neither."""

from __future__ import annotations

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from matta_pipeline import tasks
from matta_pipeline.config import PipelineConfig


class MattaStageOperator(BashOperator):
    """A Bash task running one matta stage. An exit code in `no_retry_exit_codes` (matta's 2:
    bad input, e.g. a day failing its data checks) fails the task without retrying it; any other
    failure (a crash, a kill: 1, 137, ...) is retried with the task's backoff."""

    def __init__(self, *, no_retry_exit_codes: tuple[int, ...] = (), **kwargs):
        kwargs.setdefault("skip_on_exit_code", None)  # exit 99 is a failure too, never a skip
        super().__init__(**kwargs)
        self.no_retry_exit_codes = tuple(no_retry_exit_codes)

    def execute(self, context):
        try:
            return super().execute(context)
        except AirflowException as e:
            proc = getattr(self.subprocess_hook, "sub_process", None)
            code = getattr(proc, "returncode", None)
            if code in self.no_retry_exit_codes:
                raise AirflowFailException(f"matta exited {code} (bad input): not retried. {e}") from None
            raise


def train_operator(cfg: PipelineConfig, **common):
    """The train task for `train.runner`."""
    runner = cfg.train.runner
    if runner == "local":
        return MattaStageOperator(
            task_id="train",
            bash_command=tasks.local_stage_command(cfg, "train"),
            no_retry_exit_codes=tuple(cfg.retry.no_retry_exit_codes),
            **common,
        )
    if runner == "docker":
        return _docker_train(cfg, **common)
    return _kubernetes_train(cfg, **common)


def _docker_train(cfg: PipelineConfig, **common):
    from airflow.providers.docker.operators.docker import DockerOperator
    from docker.types import DeviceRequest, Mount

    d = cfg.train.docker
    if d.gpus == "all":
        gpus = DeviceRequest(count=-1, capabilities=[["gpu"]])
    elif isinstance(d.gpus, int):
        gpus = DeviceRequest(count=d.gpus, capabilities=[["gpu"]])
    else:
        gpus = DeviceRequest(device_ids=list(d.gpus), capabilities=[["gpu"]])
    return DockerOperator(
        task_id="train",
        image=d.image,
        command=tasks.container_train_args(cfg),  # the image's entry point runs torchrun ... daily
        environment=tasks.container_env(cfg, d.data, d.workdir, d.spec, d.env),
        docker_url=d.docker_url,
        network_mode=d.network_mode,
        device_requests=[gpus],
        mounts=[Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only) for m in d.mounts],
        shm_size=d.shm_size,
        auto_remove="success",
        mount_tmp_dir=False,
        **common,
    )


def _kubernetes_train(cfg: PipelineConfig, **common):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    k = cfg.train.kubernetes
    volumes = [
        k8s.V1Volume(name="data", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=k.data_pvc, read_only=True)),
        k8s.V1Volume(name="workdir", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=k.workdir_pvc)),
        k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=k.shm_size)),
    ]
    mounts = [
        k8s.V1VolumeMount(name="data", mount_path=k.data, read_only=True),
        k8s.V1VolumeMount(name="workdir", mount_path=k.workdir),
        k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
    ]
    gpus = {"nvidia.com/gpu": str(k.gpus)} if k.gpus else {}
    return KubernetesPodOperator(
        task_id="train",
        name="matta-train",
        namespace=k.namespace,
        image=k.image,
        arguments=tasks.container_train_args(cfg),
        env_vars=tasks.container_env(cfg, k.data, k.workdir, k.spec, {"NPROC": str(max(k.gpus, 1)), **k.env}),
        container_resources=k8s.V1ResourceRequirements(limits=gpus or None, requests=gpus or None),
        volumes=volumes,
        volume_mounts=mounts,
        node_selector=k.node_selector or None,
        tolerations=[k8s.V1Toleration(**t) for t in k.tolerations] or None,
        service_account_name=k.service_account,
        startup_timeout_seconds=k.startup_timeout_s,
        get_logs=True,
        on_finish_action="delete_succeeded_pod",
        **common,
    )
