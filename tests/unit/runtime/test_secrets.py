"""Secrets out of sight: masked URLs, a worker's settings through a pipe, and a process that forgets its secrets
(its environment and what /proc shows of it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pydantic import SecretStr

from bridge.config import Settings, secret_variables
from bridge.privacy.masking import mask_url
from bridge.runtime.secrets import read_from_fd, send_through_pipe, without_secrets
from bridge.serve.pool import worker_settings_json


def test_urls_are_shown_with_the_password_masked() -> None:
    assert mask_url("redis://:s3cret@127.0.0.1:6379/0") == "redis://:****@127.0.0.1:6379/0"
    assert mask_url("redis://app:s3cret@redis.example:6379/2") == "redis://app:****@redis.example:6379/2"
    assert mask_url("unix://:s3cret@/run/redis.sock?db=0") == "unix://:****@/run/redis.sock?db=0"
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    settings = Settings(redis_url="redis://:s3cret@127.0.0.1:6379/0", api_key=SecretStr("sk-abcdefgh"))
    assert "s3cret" not in json.dumps(settings.public()) and "sk-abcdefgh" not in json.dumps(settings.public())


def test_a_workers_settings_travel_through_a_pipe_secrets_included() -> None:
    settings = Settings(
        redis_url="redis://:s3cret@127.0.0.1:6379/0",
        api_key=SecretStr("sk-abcdefgh"),
        sip_auth_users={"trunk": SecretStr("trunk-pw")},
    )
    fd = send_through_pipe(worker_settings_json(settings).encode())
    sent = json.loads(read_from_fd(fd))
    got = Settings.model_validate(sent["settings"])
    assert got.api_key is not None and got.api_key.get_secret_value() == "sk-abcdefgh"
    assert got.redis_url == settings.redis_url and got.sip_auth_users["trunk"].get_secret_value() == "trunk-pw"
    # broker mode: the token instead of the key
    brokered = json.loads(worker_settings_json(settings, broker_token="tok-123"))
    assert "api_key" not in brokered["settings"] and brokered["broker_token"] == "tok-123"
    env = {"OPENAI_API_KEY": "k", "REDIS_URL": "u", "CALLBRIDGE_BROKER_TOKEN_FILE": "/t", "HOME": "/h"}
    assert without_secrets(env, secret_variables(env)) == {"HOME": "/h"}


def test_a_process_forgets_its_secrets_and_proc_shows_none() -> None:
    code = (
        "import os; from bridge.runtime.secrets import forget_environment;"
        "from bridge.config import secret_variables;"
        "forget_environment(['argv-secret-1234'], secret_variables(os.environ));"
        "env = open('/proc/self/environ', 'rb').read(); argv = open('/proc/self/cmdline', 'rb').read();"
        "print(b'env-secret-5678' in env, b'argv-secret-1234' in argv, os.environ.get('OPENAI_API_KEY'),"
        " b'KEEP=visible' in env)"
    )
    env = {**os.environ, "OPENAI_API_KEY": "env-secret-5678", "KEEP": "visible"}
    out = subprocess.run(
        [sys.executable, "-c", code, "argv-secret-1234"], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False", "None", "True"]
