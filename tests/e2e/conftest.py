"""End-to-end harness: runs the real `wharf` binary and drives it with boto3 and the AWS CLI.

The binary comes from the WHARF_BIN environment variable (a missing or wrong path is a
test failure, not a skip). The AWS CLI is the one installed next to the interpreter that
runs pytest (the venv made by scripts/test-setup).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import botocore.config
import pytest

# The host's AWS settings (a profile, a region, an endpoint) must not leak into the
# in-process boto3 clients; every client here names its endpoint, region and key.
for _name in [n for n in os.environ if n.startswith("AWS_")]:
    del os.environ[_name]
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull

REPO_ROOT = Path(__file__).resolve().parents[2]
ROOT_KEY_ID = "test"
ROOT_SECRET = "testsecret"
START_DEADLINE_S = 20.0
STOP_DEADLINE_S = 10.0


def wharf_bin() -> str:
    path = os.environ.get("WHARF_BIN")
    if not path:
        pytest.fail(
            "WHARF_BIN is not set: build the binary (cargo build -p wharf-cli) and "
            "point WHARF_BIN at it",
            pytrace=False,
        )
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"WHARF_BIN={path!r} is not an executable file", pytrace=False)
    return path


def aws_cli() -> str:
    path = Path(sys.executable).with_name("aws")
    if not path.exists():
        pytest.fail(
            f"the AWS CLI is not next to {sys.executable}; run scripts/test-setup and "
            "use its venv's pytest",
            pytrace=False,
        )
    return str(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Wharf:
    """One `wharf up` process over a data directory (restartable on the same port)."""

    def __init__(self, data_dir: Path, port: int | None = None,
                 root_key: tuple[str, str] | None = (ROOT_KEY_ID, ROOT_SECRET),
                 region: str = "us-east-1", agent: bool = False,
                 extra_env: dict | None = None, command: str = "up"):
        self.bin = wharf_bin()
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.root_key = root_key
        self.region = region
        # The API tests run without the local agent, so that the state they check is
        # only what they made; the agent tests ask for it.
        self.agent = agent
        # Added to the process's environment (after the WHARF_* variables are removed).
        self.extra_env = dict(extra_env or {})
        # "up", or "server" for the control plane alone (it has no agent to disable).
        self.command = command
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    # --- process control -------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"wharf-{self.starts}.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "<no log>"

    def start(self, pass_root_key: bool = True) -> "Wharf":
        """Starts `wharf up`; with pass_root_key=False no --root-access-key is given (the
        server uses the key it kept in its data directory, or generates one)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        cmd = [self.bin, self.command, "--data-dir", str(self.data_dir),
               "--api-addr", f"127.0.0.1:{self.port}", "--region", self.region]
        if self.root_key and pass_root_key:
            cmd += ["--root-access-key", f"{self.root_key[0]}:{self.root_key[1]}"]
        if self.command == "up" and not self.agent:
            cmd += ["--no-agent"]
        if self.command == "up":
            # A free port, so that tests never collide with a Wharf on the default one.
            cmd += ["--registry-addr", "127.0.0.1:0"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
        env.setdefault("WHARF_LOG", "info")
        env.update(self.extra_env)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + START_DEADLINE_S
        last_error = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"wharf {self.command} exited with {self.proc.returncode} before "
                            f"it was healthy:\n{self.log()}", pytrace=False)
            try:
                with urllib.request.urlopen(self.endpoint + "/_wharf/health",
                                            timeout=1) as res:
                    if res.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError) as e:
                last_error = e
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"wharf up was not healthy within {START_DEADLINE_S}s "
                    f"({last_error}):\n{self.log()}", pytrace=False)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code (fails the test on a hang)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"wharf did not exit within {STOP_DEADLINE_S}s of SIGTERM:\n"
                            f"{self.log()}", pytrace=False)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    # --- clients -----------------------------------------------------------------------

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "aws-credentials"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "aws-config"

    def env(self, region: str | None = None) -> dict:
        """Environment for AWS CLI subprocesses: Wharf's files, nothing from the host."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AWS_") and not k.startswith("WHARF_")}
        env.update({
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials_file),
            "AWS_CONFIG_FILE": str(self.config_file),
            "AWS_PAGER": "",
            "AWS_EC2_METADATA_DISABLED": "true",
        })
        if region:
            env["AWS_DEFAULT_REGION"] = region
        return env

    def client(self, service: str = "ecs", region: str | None = None,
               key: str | None = None, secret: str | None = None, **config):
        key_id, key_secret = self.root_key or (None, None)
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region or self.region,
            aws_access_key_id=key if key is not None else key_id,
            aws_secret_access_key=secret if secret is not None else key_secret,
            config=botocore.config.Config(
                retries={"max_attempts": config.pop("max_attempts", 1), "mode": "standard"},
                connect_timeout=5, read_timeout=config.pop("read_timeout", 15), **config),
        )

    def aws_run(self, *args: str, region: str | None = None, env: dict | None = None,
                cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
        return subprocess.run([aws_cli(), *args], env=env or self.env(region), cwd=cwd,
                              capture_output=True, text=True, timeout=60)

    def aws(self, *args: str, region: str | None = None, env: dict | None = None):
        """Runs the real AWS CLI; asserts success and returns its parsed JSON output."""
        res = self.aws_run(*args, "--output", "json", region=region, env=env)
        assert res.returncode == 0, (
            f"aws {' '.join(args)} exited {res.returncode}\nstdout: {res.stdout}\n"
            f"stderr: {res.stderr}")
        return json.loads(res.stdout) if res.stdout.strip() else None


@pytest.fixture
def wharf_factory(tmp_path):
    """Makes Wharf instances; every one still running at teardown must stop cleanly."""
    made: list[Wharf] = []

    def make(**kwargs) -> Wharf:
        kwargs.setdefault("data_dir", tmp_path / f"data{len(made)}")
        w = Wharf(**kwargs)
        made.append(w)
        return w

    yield make
    failures = []
    for w in made:
        if w.proc is not None and w.proc.poll() is None:
            code = w.stop()
            if code != 0:
                failures.append(f"{w.endpoint}: exit {code}\n{w.log()}")
    assert not failures, "wharf did not shut down cleanly on SIGTERM:\n" + "\n".join(failures)


@pytest.fixture
def wharf(wharf_factory) -> Wharf:
    """A running `wharf up` with the fixed root key test:testsecret."""
    return wharf_factory().start()


@pytest.fixture
def ecs(wharf):
    return wharf.client()



def cli_service_error_exit_code() -> int:
    """The exit code the AWS CLI uses when the service returned an error.

    AWS CLI v2 exits 254; v1 (what `pip install awscli` installs) exits 255 for every
    error, service errors included.
    """
    import awscli  # the CLI's package, installed in this venv
    return 254 if int(awscli.__version__.split(".")[0]) >= 2 else 255
