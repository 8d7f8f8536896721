"""A real one-node SLURM cluster for the tests, on this host's loopback address: munged (as the munge
user, with a key and socket of its own), slurmctld and slurmd (as root), everything they write in one
temporary folder. `slurm_cluster()` yields a `Cluster` whose commands (sbatch, scancel, scontrol,
squeue) talk to it through $SLURM_CONF, and stops every daemon and job when the block ends, also when
the test fails.

Debian: `apt install slurm-wlm munge`. Slurm's daemons must run as root (slurmd starts jobs as their
user), so the cluster needs root; CI runs as root.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from servers import SLURM_PREFIX, free_port

MUNGE_USER = "munge"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scancel", "scontrol", "squeue")
CRED_EXPIRE = 10


def munge_key_command(key: Path) -> list[str] | None:
    """The command that writes a fresh munge key: `mungekey` (munge >= 0.5.14), else the older script."""
    if shutil.which("mungekey"):
        return ["mungekey", "--create", f"--keyfile={key}"]
    if shutil.which("create-munge-key"):
        return ["create-munge-key", "-f", "-k", str(key)]
    return None


def _missing() -> str | None:
    missing = [name for name in DAEMONS + CLIENTS if not shutil.which(name, path=_sbin_path())]
    if munge_key_command(Path("key")) is None:
        missing.append("mungekey")
    if missing:
        return f"SLURM or munge is not installed (missing {', '.join(missing)})"
    if os.geteuid() != 0:
        return "a SLURM cluster needs root (slurmctld and slurmd run as root, munged as the munge user)"
    try:
        pwd.getpwnam(MUNGE_USER)
    except KeyError:
        return f"no {MUNGE_USER} user (the munge package creates it)"
    return None


def require_slurm() -> None:
    """Skip where SLURM and munge are missing (or this is not root), unless $HARNESS_REQUIRE_SYSTEM_TOOLS
    says they must be there (CI)."""
    message = _missing()
    if message is None:
        return
    if os.environ.get("HARNESS_REQUIRE_SYSTEM_TOOLS"):
        pytest.fail(message + " and $HARNESS_REQUIRE_SYSTEM_TOOLS is set")
    pytest.skip(message)


def _sbin_path() -> str:
    # The daemons live in /usr/sbin, which a non-login PATH may lack.
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


@dataclass
class Cluster:
    folder: Path
    conf: Path
    node: str
    cpus: int

    @property
    def env(self) -> dict[str, str]:
        """Environment of a client command (and, through sbatch's export, of its jobs)."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": _sbin_path()}

    def run(self, *command: str, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout,
                                env={**self.env, **(env or {})})
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n"
                               f"{result.stderr}\n{self.logs()}")
        return result

    def sbatch(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Submit; the job id (of an array: the array's id)."""
        return self.run("sbatch", "--parsable", *args, env=env).stdout.strip().split(";")[0]

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """What `scontrol show job` says of a job, or of each task of an array: JobState, ExitCode,
        Restarts, ArrayTaskId, ... Finished jobs stay listed for MinJobAge."""
        out = self.run("scontrol", "show", "job", "--oneliner", job_id, check=False).stdout
        return [fields for line in out.splitlines() if "JobId" in (fields := dict(re.findall(r"(\w+)=(\S*)", line)))]

    def task(self, name: str) -> dict[str, str]:
        """One array task, by ARRAYID_TASK (its own JobId is another number); {} if Slurm has none."""
        found = self.jobs(name)
        return found[0] if len(found) == 1 else {}

    def wait_until_idle(self, timeout: float = 120) -> None:
        """Until the node takes jobs."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.run("scontrol", "show", "node", "--oneliner", self.node, check=False).stdout
            if re.search(r"State=IDLE\b", state):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {self.node} not idle in {timeout} s: {state}\n{self.logs()}")
            time.sleep(0.5)

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for path in (self.folder / "munge" / "munged.log", *(self.folder / "log").iterdir()):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)


def _conf(folder: Path, node: str, cpus: int, munge_socket: Path, extra: str) -> str:
    ctld_port, slurmd_port = free_port(), free_port()
    return f"""\
ClusterName=harnesstest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: how long a node refuses a job id it has killed, and so how long Slurm holds a requeued job
# before it may start again (cred_expire + 1 s; default 120 s, too long for a test)
AuthInfo=socket={munge_socket},cred_expire={CRED_EXPIRE}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/run/slurmctld.pid
SlurmdPidFile={folder}/run/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups here: processes tracked by parent pid, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# array tasks share the node, one CPU each unless they ask for more
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
# the main scheduling pass (which starts a requeued job once its hold is over) every 2 s, not 60 s
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# seconds between SIGTERM and SIGKILL when a job is cancelled or times out
KillWait=60
# finished jobs stay in `scontrol show job` this long, so the tests read their exit codes
MinJobAge=3600
SlurmdParameters=config_overrides
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP
{extra}"""


@contextlib.contextmanager
def slurm_cluster(cpus: int | None = None, extra_conf: str = "") -> Iterator[Cluster]:
    """A one-node cluster (the node named after this host, `cpus` CPUs: default, this machine's)."""
    require_slurm()
    # Under /tmp rather than pytest's tmp_path: the munge user must reach its folder.
    folder = Path(tempfile.mkdtemp(prefix=SLURM_PREFIX))
    folder.chmod(0o755)
    munge_dir = folder / "munge"
    for sub in ("state", "spool", "run", "log", "jobs", "munge"):
        (folder / sub).mkdir()
    account = pwd.getpwnam(MUNGE_USER)
    os.chown(munge_dir, account.pw_uid, account.pw_gid)
    munge_dir.chmod(0o711)      # munged wants its socket's folder searchable by all
    node = socket.gethostname().split(".")[0]
    cluster = Cluster(folder, folder / "slurm.conf", node, cpus or os.cpu_count() or 1)
    munge_socket = munge_dir / "munge.socket"
    cluster.conf.write_text(_conf(folder, node, cluster.cpus, munge_socket, extra_conf))
    started: list[subprocess.Popen] = []
    try:
        key = munge_dir / "munge.key"
        _check(munge_key_command(key), user=MUNGE_USER)
        started.append(_start(["munged", "--foreground", f"--socket={munge_socket}",
                               f"--key-file={key}", f"--pid-file={munge_dir}/munged.pid",
                               f"--seed-file={munge_dir}/munged.seed", f"--log-file={munge_dir}/munged.log"],
                              cluster, "munged", user=MUNGE_USER))
        _wait_for(munge_socket.exists, started[-1], cluster, "munged's socket")
        started.append(_start(["slurmctld", "-D", "-f", str(cluster.conf)], cluster, "slurmctld"))
        started.append(_start(["slurmd", "-D", "-f", str(cluster.conf), "-N", node], cluster, "slurmd"))
        cluster.wait_until_idle()
        yield cluster
    finally:
        _stop(cluster, started)
        shutil.rmtree(folder, ignore_errors=True)


def _check(command: list[str], user: str | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env={"PATH": _sbin_path()},
                            **_as_user(user))
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")


def _as_user(user: str | None) -> dict:
    return {} if user is None else {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _start(command: list[str], cluster: Cluster, name: str, user: str | None = None) -> subprocess.Popen:
    with open(cluster.folder / "log" / f"{name}.out", "w") as out:
        # SLURM_CONF in the daemons' environment marks them and their jobs' processes as this cluster's.
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=cluster.env,
                                start_new_session=True, **_as_user(user))


def _wait_for(condition, process: subprocess.Popen, cluster: Cluster, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no {what}:\n{cluster.logs()}")
        time.sleep(0.1)


def cluster_pids(cluster: Cluster) -> list[int]:
    """Processes of this cluster still alive: the daemons and whatever runs for its jobs (slurmstepd,
    batch scripts, workers), found by the $SLURM_CONF of this cluster in their environment."""
    marker = f"SLURM_CONF={cluster.conf}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def _stop(cluster: Cluster, started: list[subprocess.Popen]) -> None:
    """Cancel every job and wait until it has left the node, then stop the daemons (slurmd last but
    one, munged last); whatever of the cluster is still alive after that is killed by its pid."""
    if len(started) == len(DAEMONS):
        with contextlib.suppress(Exception):
            cluster.run("scancel", "--full", "--signal=KILL", "--user=root", check=False)
            cluster.run("scancel", "--user=root", check=False)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                running = cluster.run("squeue", "--noheader", "--states=all", "--format=%T", check=False).stdout
                if not ({"RUNNING", "COMPLETING", "PENDING", "REQUEUED", "CONFIGURING"} & set(running.split())):
                    break
                time.sleep(0.5)
    for process in reversed(started):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=60)
    deadline = time.monotonic() + 60
    while left := cluster_pids(cluster):
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of the SLURM cluster in {cluster.folder} outlived it: {left}")
        time.sleep(0.2)
