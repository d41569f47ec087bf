"""MQTT signing keys of their own, one per council, through a real mosquitto and `bcd run`: a command signed
with hr's key is refused on a service of another team (with the reason, on `replies/<id>`) and acted on for
hr's own service."""

from __future__ import annotations

from tests.helpers import Broker
from tests.helpers.estates import payroll_service
from tests.integration.test_mqtt import Estate, Watcher, command, estate, payload, sign

SHARED_FIXTURES = (estate,)
HR_KEY = "hr-council-key-0123456789abcdef"


async def test_a_key_scoped_to_one_team_is_refused_on_another_teams_service(estate: Estate, mosquitto: Broker
                                                                            ) -> None:
    (estate.tmp_path / "hr_key").write_text(HR_KEY + "\n")
    config = estate.config(mosquitto, commands={"enabled": True, "keys": [
        {"name": "hr", "hmac_key_file": "hr_key", "role": "operator", "scope": {"labels": {"team": "hr"}}}]})
    config["services"]["library"] = payroll_service(estate.dorset.url, estate.hampshire.url,
                                                    labels={"team": "libraries"})
    replies = f"{estate.prefix}/replies"
    async with Watcher(mosquitto, f"{replies}/#") as watcher:
        await estate.start(config)
        await watcher.publish(f"{estate.prefix}/commands", sign(command("lib-1", action="ack", service="library"),
                                                                key=HR_KEY))
        refused = payload(await watcher.wait(f"{replies}/lib-1")).decode()
        assert refused == "refused: mqtt:olive may act only on services labelled team=hr; library is not"
        await watcher.publish(f"{estate.prefix}/commands", sign(command("pay-1", action="ack"), key=HR_KEY))
        assert payload(await watcher.wait(f"{replies}/pay-1")) == b"accepted: nothing to acknowledge"
        await watcher.publish(f"{estate.prefix}/commands", sign(command("old-1", action="ack")))  # the test KEY
        assert payload(await watcher.wait(f"{replies}/old-1")) == b"refused: bad signature"  # not configured here
