"""The launch scripts, run with stand-ins for gcloud, srun and scontrol on PATH."""

import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stub(directory, name, body):
    path = directory / name
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(0o755)


def _run(script, args, env_extra, tmp_path):
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", **env_extra}
    return subprocess.run(
        ["bash", os.path.join(REPO, script), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _head() -> str:
    return subprocess.check_output(["git", "-C", REPO, "rev-parse", "HEAD"], text=True).strip()


def test_tpu_pod_installs_the_commit_it_is_launched_from(tmp_path):
    log = tmp_path / "gcloud.log"
    _stub(tmp_path, "gcloud", f'printf "%s\\n" "$@" >> {log}')
    env = {"TPU_NAME": "pod", "ZONE": "z", "JAXCL_REPO": "https://example.org/me/jaxcl.git"}
    result = _run("launch/tpu_pod.sh", ["configs/simclr_imagenet.py", "gs://b/run"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    commands = log.read_text()
    assert "git clone --quiet https://example.org/me/jaxcl.git jaxcl" in commands
    assert f"git checkout --quiet --detach {_head()}" in commands
    assert "--workdir=gs://b/run" in commands


def test_tpu_pod_installs_a_given_tag(tmp_path):
    log = tmp_path / "gcloud.log"
    _stub(tmp_path, "gcloud", f'printf "%s\\n" "$@" >> {log}')
    env = {"TPU_NAME": "pod", "ZONE": "z", "JAXCL_REPO": "git@host:me/jaxcl", "JAXCL_REF": "v0.2"}
    result = _run("launch/tpu_pod.sh", ["configs/simclr_imagenet.py", "/mnt/run"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "git checkout --quiet --detach v0.2" in log.read_text()


def test_slurm_requeues_a_job_that_checkpointed_after_sigterm(tmp_path):
    with open(os.path.join(REPO, "launch/slurm.sbatch"), encoding="utf-8") as f:
        header = f.read()
    assert "#SBATCH --signal=TERM@300" in header and "#SBATCH --requeue" in header
    log = tmp_path / "scontrol.log"
    _stub(tmp_path, "srun", "exit 143")  # what jaxcl.main exits with after saving on SIGTERM
    _stub(tmp_path, "scontrol", f'echo "$@" >> {log}')
    env = {"SLURM_JOB_ID": "4242"}
    result = _run(
        "launch/slurm.sbatch", ["configs/simclr_imagenet.py", "/shared/run"], env, tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert log.read_text().strip() == "requeue 4242"


def test_slurm_passes_other_failures_through(tmp_path):
    log = tmp_path / "scontrol.log"
    _stub(tmp_path, "srun", "exit 1")
    _stub(tmp_path, "scontrol", f'echo "$@" >> {log}')
    result = _run("launch/slurm.sbatch", ["c.py", "/w"], {"SLURM_JOB_ID": "1"}, tmp_path)
    assert result.returncode == 1 and not log.exists()
