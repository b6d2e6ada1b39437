"""`tcscale setup` seeds a Secret block for every secret the chat bridge reads from one (the WeCom robot's too)."""

from chatops.settings import ChatopsSettings
from deployments.setup import SECRET_BLOCKS


def test_every_secret_block_the_bridge_reads_is_seeded_from_its_env_variable() -> None:
    blocks = {
        field.default: "TCSCALE_CHATOPS_" + name.removesuffix("_block").upper()
        for name, field in ChatopsSettings.model_fields.items()
        if name.endswith("_block")
    }
    assert {"tcscale-wecom-robot-token", "tcscale-wecom-robot-aes-key"} <= blocks.keys()
    assert {block: SECRET_BLOCKS.get(block) for block in blocks} == blocks
