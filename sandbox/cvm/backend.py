"""CVM state and rules: key pairs, images, instances (no HTTP here).

The models live in `sandbox.cvm.models` (re-exported here); the image and instance rules in
`sandbox.cvm.images` and `sandbox.cvm.instances`, mixed into `CvmBackend`. Methods other
services call: `instance(region, id)`, `instances(region)`, `image(region, id)`, `run_instances(...)`.

Events (`cloud.events`): `instance.state(instance)` after every instance state change (PENDING at
launch, RUNNING, LAUNCH_FAILED, STOPPING, STOPPED, STARTING, REBOOTING, TERMINATING, TERMINATED,
and on a RestrictState change); `image.creating(image, instance)` when CreateImage is accepted;
`image.state(image)` when it becomes NORMAL / CREATEFAILED; `image.deleted(image)`.

Login passwords are kept only as salted hashes (`sandbox.cvm.passwords`), left out of `dump()` (so out
of `GET /_sandbox/state`) and persisted beside the state file in `cvm-logins.json` (mode 0600).
"""

import json
import os
import re
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.core.backend import Backend, backend
from sandbox.core.errors import ApiError
from sandbox.core.ids import new_id
from sandbox.cvm.images import ImageRules
from sandbox.cvm.instances import InstanceRules, LaunchSpec
from sandbox.cvm.models import CvmState, Image, Instance, KeyPair

__all__ = ["CvmBackend", "CvmState", "Image", "Instance", "KeyPair", "LaunchSpec"]

KEY_NAME = re.compile(r"^[A-Za-z0-9_]{1,25}$")
LOGINS_FILE = "cvm-logins.json"


@backend
class CvmBackend(ImageRules, InstanceRules, Backend):
    service = "cvm"
    state_model = CvmState
    state: CvmState
    _saved_logins: dict[str, dict[str, str]] | None = None  # what cvm-logins.json holds now

    def advance(self, now: float) -> float | None:
        due = [d for d in (self._advance_images(now), self._advance_instances(now)) if d is not None]
        return min(due) if due else None

    # Persistence: the state without password hashes, and the hashes in a file of their own
    def dump(self) -> dict[str, Any]:
        self._save_logins()
        return super().dump()

    def load(self, data: dict[str, Any]) -> None:
        super().load(data)
        path = self._logins_path()
        if path is None or not path.exists():
            return
        saved = json.loads(path.read_text())
        for kind, items in (("instances", self.state.instances), ("images", self.state.images)):
            for resource_id, password_hash in saved.get(kind, {}).items():
                if resource_id in items:
                    items[resource_id].password_hash = password_hash

    def _logins_path(self) -> Path | None:
        state_dir = self.cloud.config.state_dir
        return state_dir / LOGINS_FILE if state_dir else None

    def _save_logins(self) -> None:
        path = self._logins_path()
        if path is None:
            return
        logins = {
            "instances": {i: x.password_hash for i, x in self.state.instances.items() if x.password_hash},
            "images": {i: x.password_hash for i, x in self.state.images.items() if x.password_hash},
        }
        if logins == self._saved_logins or (not any(logins.values()) and not path.exists()):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(logins, file)
        os.replace(partial, path)
        self._saved_logins = logins

    # Key pairs
    def create_key_pair(self, region: str, name: str, project_id: int, tags: dict[str, str]) -> tuple[KeyPair, str]:
        """A new RSA key pair; the private key is returned once and never stored (as on the real cloud)."""
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
        public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        key = self.import_key_pair(region, name, project_id, f"{public.decode()} skey", tags)
        return key, pem

    def import_key_pair(
        self, region: str, name: str, project_id: int, public_key: str, tags: dict[str, str]
    ) -> KeyPair:
        if not name:
            raise ApiError("InvalidKeyPairNameEmpty", "The key pair name must not be empty.")
        if len(name) > 25:
            raise ApiError("InvalidKeyPairNameTooLong", f"The key pair name `{name}` is longer than 25 characters.")
        if not KEY_NAME.match(name):
            raise ApiError(
                "InvalidKeyPairNameIncludeIllegalChar",
                f"The key pair name `{name}` may contain only letters, digits and underscores.",
            )
        if any(k.key_name == name and k.region == region for k in self.state.key_pairs.values()):
            raise ApiError("InvalidKeyPairName.Duplicate", f"A key pair named `{name}` already exists.")
        if not public_key.startswith(("ssh-rsa ", "ssh-ed25519 ", "ecdsa-sha2-")):
            raise ApiError("InvalidPublicKey.Malformed", "The public key is not in OpenSSH format.")
        key = KeyPair(
            key_id=new_id("skey"),
            key_name=name,
            region=region,
            project_id=project_id,
            public_key=public_key.strip(),
            created_time=self.cloud.clock.iso(),
            tags=tags,
        )
        self.state.key_pairs[key.key_id] = key
        return key

    def key_pairs(self, region: str) -> list[KeyPair]:
        return [k for k in self.state.key_pairs.values() if k.region == region]

    def key_pair(self, region: str, key_id: str) -> KeyPair:
        if not re.fullmatch(r"skey-[a-z0-9]{8}", key_id):
            raise ApiError("InvalidKeyPairId.Malformed", f"The key pair id `{key_id}` is malformed.")
        key = self.state.key_pairs.get(key_id)
        if key is None or key.region != region:
            raise ApiError("InvalidKeyPairId.NotFound", f"The key pair `{key_id}` does not exist.")
        return key
