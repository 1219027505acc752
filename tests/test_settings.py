"""One settings resolver: flag > environment (new, then old names) > trustar.conf."""

from __future__ import annotations

import pytest

from gdtrustar.errors import ConfigError
from gdtrustar.settings import DEFAULT_API_ENDPOINT, load_settings


def test_defaults_and_new_names_win_over_old(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={"TRUSTAR_API_KEY": "new", "API_KEY": "old", "USER_API_SECRET": "s3cr3t-v",
                                  "ENCLAVE_ID": "e1, e2,e1", "TRUSTAR_URL": "https://station.example/"})
    assert settings.api_key == "new" and settings.api_secret == "s3cr3t-v"
    assert settings.enclave_ids == ("e1", "e2")
    assert settings.station_url == "https://station.example"
    assert settings.api_endpoint == DEFAULT_API_ENDPOINT and settings.max_rate == 60.0
    assert "s3cr3t-v" not in repr(settings)


def test_flags_beat_environment_beats_conf(tmp_path):
    conf = tmp_path / "trustar.conf"
    conf.write_text("[trustar]\nuser_api_key = conf-key\nuser_api_secret = conf-secret\n"
                    "enclave_ids = c1\napi_endpoint = https://conf/api/1.3\n")
    env = {"TRUSTAR_PYTHON_CONFIG_PATH": str(conf), "TRUSTAR_API_ENDPOINT": "https://env/api/1.3"}
    settings = load_settings(env=env, enclave_ids=("flag",), max_rate=120)
    assert settings.enclave_ids == ("flag",)
    assert settings.api_endpoint == "https://env/api/1.3"
    assert (settings.api_key, settings.api_secret) == ("conf-key", "conf-secret")
    assert settings.max_rate == 120


def test_explicit_missing_conf_and_missing_credentials_are_config_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./trustar.conf here
    with pytest.raises(ConfigError, match="not found"):
        load_settings(env={}, config_file=str(tmp_path / "nope.conf"))
    with pytest.raises(ConfigError, match="TRUSTAR_API_KEY and TRUSTAR_API_SECRET"):
        load_settings(env={}).require_credentials()
