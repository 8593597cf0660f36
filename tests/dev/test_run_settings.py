"""``make run``'s own settings come through antrian.config like every other, and decide the stand-ins.

Fast tier: dev/run.py's decisions over a given environment, no process started.
"""

from __future__ import annotations

import pytest

from antrian.config import ConfigError, load_dev_settings
from dev.run import smtp_unset, upstream_unset

pytestmark = pytest.mark.fast


def test_defaults_and_values():
    assert load_dev_settings({}) == load_dev_settings({"DEMO_DATA": "true", "MAIL_SINK_DIR": "var/mail-sink"})
    dev = load_dev_settings({"DEMO_DATA": "off", "DEV_SCHOOL_API_PORT": "9081", "MAIL_SINK_PORT": "9025",
                             "MAIL_SINK_SMTP_PORT": "2525", "MAIL_SINK_DIR": " /tmp/sink "})
    assert (dev.demo_data, dev.dev_school_api_port, dev.mail_sink_port, dev.mail_sink_smtp_port, dev.mail_sink_dir) \
        == (False, 9081, 9025, 2525, "/tmp/sink")


@pytest.mark.parametrize(("variable", "value"), [("DEMO_DATA", "maybe"), ("MAIL_SINK_PORT", "70000"),
                                                 ("DEV_SCHOOL_API_PORT", "x")])
def test_a_wrong_value_names_its_variable(variable, value):
    with pytest.raises(ConfigError, match=f"^{variable}='{value}' is not valid: "):
        load_dev_settings({variable: value})


def test_the_stand_ins_start_only_for_what_is_not_given():
    assert upstream_unset({}) and upstream_unset({"UPSTREAM_BASE_URL": "  "})
    assert not upstream_unset({"UPSTREAM_BASE_URL": "https://school.example"})
    assert smtp_unset({}) and smtp_unset({"MAIL_BACKEND": "smtp"})
    assert not smtp_unset({"SMTP_HOST": "mail.example"}) and not smtp_unset({"SMTP_PORT": "587"})
    assert not smtp_unset({"MAIL_BACKEND": "file"})


def test_a_generated_server_key_that_starts_with_a_dash_reaches_the_gateway_as_its_value():
    # Found by a clean-clone run: secrets.token_urlsafe may start with "-", which argparse took for an option
    from dev.run import CHILDREN

    [gateway] = [child for child in CHILDREN if child.name == "dev-payment-gateway"]
    argv = [arg.format(payment_server_key="-xjuWds6", gateway_port=8082) for arg in gateway.argv]
    assert "--server-key=-xjuWds6" in argv
