"""The bridge's settings (env `TCSCALE_CHATOPS_*`) and its secrets (env, else Prefect Secret blocks).

Every secret is a `SecretStr`: it never shows in a repr, a log line, a reply, the audit file or an exception.
The bridge refuses to start while a secret of an enabled platform is unset (`ChatopsConfigError` says which
env variable or Secret block to set, never a value).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Platform = Literal["generic", "wecom", "wecom-robot"]
PLATFORMS: tuple[Platform, ...] = ("generic", "wecom", "wecom-robot")
DEFAULT_STATE_DIR = Path.home() / ".tcscale" / "chatops"


class ChatopsConfigError(Exception):
    """The bridge cannot start: a secret is unset or the configuration is wrong (message names no value)."""


class ChatopsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TCSCALE_CHATOPS_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)
    platforms: Annotated[list[Platform], NoDecode] = Field(
        default_factory=lambda: ["generic"], description="enabled routes, comma separated: generic, wecom, wecom-robot"
    )
    # --- generic webhook (Slack's v0 scheme) ---
    signing_secret: SecretStr | None = None
    signing_secret_block: str = "tcscale-chat-signing-secret"
    reply_url: str | None = Field(None, description="where results go when a request has no response_url")
    # --- WeCom self-built app ---
    wecom_token: SecretStr | None = None
    wecom_token_block: str = "tcscale-wecom-token"
    wecom_aes_key: SecretStr | None = None
    wecom_aes_key_block: str = "tcscale-wecom-aes-key"
    wecom_corp_secret: SecretStr | None = None
    wecom_corp_secret_block: str = "tcscale-wecom-corp-secret"
    wecom_corp_id: str | None = None
    wecom_agent_id: int | None = None
    wecom_api_base: str = Field("https://qyapi.weixin.qq.com", description="WeCom API base URL (tests: a receiver)")
    wecom_reply_seconds: float = Field(4.0, gt=0, le=4.5, description="answer WeCom passively within this")
    # --- WeCom group robot (智能机器人, API mode): its own Token and EncodingAESKey ---
    wecom_robot_token: SecretStr | None = None
    wecom_robot_token_block: str = "tcscale-wecom-robot-token"
    wecom_robot_aes_key: SecretStr | None = None
    wecom_robot_aes_key_block: str = "tcscale-wecom-robot-aes-key"
    wecom_robot_id: str | None = Field(None, description="the robot's aibotid: a message for another robot is refused")
    wecom_robot_receive_id: str = Field("", description="what its messages end with: '' (internal robot)")
    wecom_robot_response_base: str = Field(
        "https://qyapi.weixin.qq.com/", description="a message's response_url must start with this (tests: a receiver)"
    )
    # --- behaviour ---
    timestamp_window: int = Field(300, ge=10, le=3600, description="seconds a signed request stays valid")
    message_ttl: int = Field(900, ge=600, description="seconds message ids are remembered (>= 10 min)")
    plan_max_age_minutes: int = Field(30, ge=1, description="`apply` takes plans at most this old")
    busy: Literal["reply", "queue"] = Field("reply", description="a busy tier: reply busy, or create the run queued")
    allowlist_file: Path | None = Field(None, description="YAML/JSON allowlist file")
    allowlist: str | None = Field(None, description="the allowlist as JSON (when no file)")
    state_dir: Path = DEFAULT_STATE_DIR
    database: Path | None = Field(None, description="SQLite file; default <state_dir>/chatops.sqlite")
    audit_file: Path | None = Field(None, description="JSON lines; default <state_dir>/audit.jsonl")
    poll_seconds: float = Field(2.0, gt=0, le=60, description="how often finished runs are looked for")
    region: str = Field("ap-guangzhou", description="region when no cluster declaration names one")
    ui_url: str | None = Field(None, description="Prefect UI base for links; default PREFECT_UI_URL")

    @field_validator("platforms", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _dedupe_outlives_the_window(self) -> ChatopsSettings:
        # A request stamped up to `timestamp_window` s ahead is accepted until 2 x window after it first arrives;
        # its message id must be remembered that long, or a replay then runs again.
        if self.message_ttl <= 2 * self.timestamp_window:
            raise ValueError(
                f"TCSCALE_CHATOPS_MESSAGE_TTL ({self.message_ttl} s) must be more than twice "
                f"TCSCALE_CHATOPS_TIMESTAMP_WINDOW ({self.timestamp_window} s): a signed request stays acceptable "
                f"for up to 2 x the window after it arrives, and a replay after its id is forgotten would run again; "
                f"raise MESSAGE_TTL above {2 * self.timestamp_window} or lower TIMESTAMP_WINDOW"
            )
        return self

    def database_path(self) -> Path:
        return self.database or self.state_dir / "chatops.sqlite"

    def audit_path(self) -> Path:
        return self.audit_file or self.state_dir / "audit.jsonl"

    def resolve_secrets(self) -> Secrets:
        """The secrets of every enabled platform, from env or Secret blocks; `ChatopsConfigError` if any is unset."""
        missing: list[str] = []

        def need(value: SecretStr | None, env: str, block: str) -> SecretStr | None:
            found = value if value is not None and value.get_secret_value() else _load_block(block)
            if found is None:
                missing.append(f"TCSCALE_CHATOPS_{env} (or Prefect Secret block {block!r})")
            return found

        secrets = Secrets()
        if "generic" in self.platforms:
            secrets.signing_secret = need(self.signing_secret, "SIGNING_SECRET", self.signing_secret_block)
        if "wecom" in self.platforms:
            secrets.wecom_token = need(self.wecom_token, "WECOM_TOKEN", self.wecom_token_block)
            secrets.wecom_aes_key = need(self.wecom_aes_key, "WECOM_AES_KEY", self.wecom_aes_key_block)
            secrets.wecom_corp_secret = need(self.wecom_corp_secret, "WECOM_CORP_SECRET", self.wecom_corp_secret_block)
            if not self.wecom_corp_id:
                missing.append("TCSCALE_CHATOPS_WECOM_CORP_ID")
            if self.wecom_agent_id is None:
                missing.append("TCSCALE_CHATOPS_WECOM_AGENT_ID")
            key = secrets.wecom_aes_key.get_secret_value() if secrets.wecom_aes_key else None
            if key is not None and len(key) != 43:
                raise ChatopsConfigError("the WeCom EncodingAESKey must be 43 characters (as WeCom shows it)")
        if "wecom-robot" in self.platforms:
            secrets.wecom_robot_token = need(self.wecom_robot_token, "WECOM_ROBOT_TOKEN", self.wecom_robot_token_block)
            secrets.wecom_robot_aes_key = need(
                self.wecom_robot_aes_key, "WECOM_ROBOT_AES_KEY", self.wecom_robot_aes_key_block
            )
            if not self.wecom_robot_id:
                missing.append("TCSCALE_CHATOPS_WECOM_ROBOT_ID (the robot's aibotid)")
            key = secrets.wecom_robot_aes_key.get_secret_value() if secrets.wecom_robot_aes_key else None
            if key is not None and len(key) != 43:
                raise ChatopsConfigError("the WeCom robot's EncodingAESKey must be 43 characters (as WeCom shows it)")
        if missing:
            raise ChatopsConfigError("the chatops bridge will not start with secrets unset: set " + "; ".join(missing))
        return secrets


class Secrets(BaseModel):
    signing_secret: SecretStr | None = None
    wecom_token: SecretStr | None = None
    wecom_aes_key: SecretStr | None = None
    wecom_corp_secret: SecretStr | None = None
    wecom_robot_token: SecretStr | None = None
    wecom_robot_aes_key: SecretStr | None = None


def _load_block(name: str) -> SecretStr | None:
    """A Prefect Secret block's value, or None when there is no such block (or no Prefect API to ask)."""
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL

    if not name or not PREFECT_API_URL.value():  # never Prefect's temporary server: blocks live on a real one
        return None

    try:
        value = Secret.load(name, _sync=True).get()  # type: ignore[call-arg]
    except Exception:  # not found, no API: the caller reports the name as missing; never the error's text
        return None
    return SecretStr(value) if isinstance(value, str) and value else None
