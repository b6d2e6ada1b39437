"""Posting to the chat platforms (results later, and WeCom answers that missed the passive-reply deadline).

Generic: POST JSON {"text", "run_id", "run_url", "state", "report_url"} to the request's response_url (or the
configured reply URL). WeCom's group robot: POST a markdown message to the message's response_url (one post per
response_url, within an hour of the message; the URL carries its own code, so it is never logged). WeCom's app: an
access token from `{base}/cgi-bin/gettoken?corpid&corpsecret` (cached until it expires), then
`{base}/cgi-bin/message/send?access_token=...` with a text message to the user. The base URLs are configurable so
tests post to a local receiver. URLs that carry the corp secret or the token never reach a log
line or an exception: errors name the endpoint only, and httpx's request log is kept at WARNING.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
from pydantic import SecretStr

logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO line prints the URL, with access_token in it
TIMEOUT = 10.0


class ReplyError(Exception):
    """Posting failed; the message names the endpoint, never a secret."""


async def post_json(url: str, payload: dict[str, Any]) -> None:
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            response = await client.post(url, json=payload)
    except httpx.HTTPError as error:
        raise ReplyError(f"posting to the reply URL failed: {type(error).__name__}") from None
    if response.status_code >= 400:
        raise ReplyError(f"the reply URL answered HTTP {response.status_code}")


async def post_robot_markdown(url: str, text: str) -> None:
    """A WeCom group robot's active reply: markdown to the message's response_url (WeCom: msgtype markdown or
    template_card; errcode 0 when taken)."""
    payload = {"msgtype": "markdown", "markdown": {"content": text}}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            response = await client.post(url, json=payload)
        answer = response.json()
    except (httpx.HTTPError, ValueError) as error:
        raise ReplyError(f"posting to the robot's response_url failed: {type(error).__name__}") from None
    if response.status_code >= 400 or not isinstance(answer, dict) or answer.get("errcode", 0) != 0:
        errcode = answer.get("errcode") if isinstance(answer, dict) else None
        raise ReplyError(f"the robot's response_url answered HTTP {response.status_code}, errcode {errcode}")


class WeComSender:
    def __init__(self, base: str, corp_id: str, corp_secret: SecretStr, agent_id: int) -> None:
        self.base = base.rstrip("/")
        self.corp_id = corp_id
        self._secret = corp_secret
        self.agent_id = agent_id
        self._token: tuple[str, float] | None = None

    def __repr__(self) -> str:
        return f"WeComSender(base={self.base!r}, corp_id={self.corp_id!r}, agent_id={self.agent_id})"

    async def _call(self, client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await client.request(method, f"{self.base}{path}", **kwargs)
            answer = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise ReplyError(f"WeCom {path} failed: {type(error).__name__}") from None
        if response.status_code >= 400 or answer.get("errcode", 0) != 0:
            raise ReplyError(f"WeCom {path} answered errcode {answer.get('errcode')}: {answer.get('errmsg', '')}"[:300])
        return answer

    async def _access_token(self, client: httpx.AsyncClient) -> str:
        if self._token is not None and self._token[1] > time.monotonic():
            return self._token[0]
        params = {"corpid": self.corp_id, "corpsecret": self._secret.get_secret_value()}
        answer = await self._call(client, "GET", "/cgi-bin/gettoken", params=params)
        token = str(answer["access_token"])
        self._token = (token, time.monotonic() + max(60, int(answer.get("expires_in", 7200)) - 300))
        return token

    async def send_text(self, user: str, text: str) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            token = await self._access_token(client)
            body = {"touser": user, "msgtype": "text", "agentid": self.agent_id, "text": {"content": text}}
            try:
                await self._call(client, "POST", "/cgi-bin/message/send", params={"access_token": token}, json=body)
            except ReplyError:
                self._token = None  # an expired token: the next attempt fetches a new one
                raise
