"""IAM and STS behind a small typed interface, with one real implementation over boto3.

botocore's ``standard`` retry mode retries throttling, 5xx and connection errors; everything else is a logic
error and is translated once, here, into a keyrotor error that says what to do.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError
from pydantic import SecretStr

from keyrotor.errors import AwsError, KeyrotorError, PreconditionFailed, TransientError
from keyrotor.model import AccessKey, KeyStatus, LastUsed, NewCredentials

# Codes that mean "try again": throttling, AWS-side failures, and (for a brand-new key only) propagation delay.
_TRANSIENT_CODES = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "ServiceFailure", "InternalFailure"}
_NOT_YET_VALID_CODES = {"InvalidClientTokenId", "SignatureDoesNotMatch", "AuthFailure"}


class IamGateway(Protocol):
    """The IAM and STS operations a rotation needs."""

    def account_id(self) -> str: ...

    def ensure_user(self, user_name: str) -> None: ...

    def list_keys(self, user_name: str) -> list[AccessKey]: ...

    def create_key(self, user_name: str) -> NewCredentials: ...

    def set_status(self, user_name: str, key_id: str, status: KeyStatus) -> None: ...

    def delete_key(self, user_name: str, key_id: str) -> None: ...

    def last_used(self, key_id: str) -> LastUsed: ...

    def caller_arn(self, credentials: NewCredentials) -> str: ...


def translate(error: Exception, action: str) -> KeyrotorError:
    """Map a botocore failure to the keyrotor error an operator can act on."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _TRANSIENT_CODES or status >= 500:
            return AwsError(f"{action}: AWS kept failing after retries ({code}: {message})")
        if code == "NoSuchEntity":
            return PreconditionFailed(f"{action}: {message or 'no such entity'}")
        if code == "LimitExceeded":
            return PreconditionFailed(f"{action}: IAM allows at most two access keys per user ({message})")
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            return AwsError(f"{action}: access denied; keyrotor's AWS identity needs permission ({message})")
        if code in _NOT_YET_VALID_CODES:
            return AwsError(f"{action}: AWS rejected the credentials ({code}: {message})")
        return AwsError(f"{action}: {code}: {message}")
    if isinstance(error, NoCredentialsError):
        return AwsError(f"{action}: no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID)")
    if isinstance(error, EndpointConnectionError):
        return AwsError(f"{action}: cannot reach AWS ({error})")
    return AwsError(f"{action}: {error}")


class Boto3Iam:
    """:class:`IamGateway` over boto3. Region, profile and ``AWS_ENDPOINT_URL`` come from the standard settings."""

    def __init__(self, session: boto3.Session | None = None, max_attempts: int = 10) -> None:
        self._session = session or boto3.Session()
        self._config = Config(retries={"mode": "standard", "max_attempts": max_attempts})
        self._iam = self._session.client("iam", config=self._config)
        self._sts = self._session.client("sts", config=self._config)
        self._account_id: str | None = None

    def _call(self, action: str, client: Any, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = getattr(client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as error:
            raise translate(error, action) from None
        return response

    def account_id(self) -> str:
        if self._account_id is None:
            self._account_id = str(
                self._call("identify keyrotor's AWS account", self._sts, "get_caller_identity")["Account"]
            )
        return self._account_id

    def ensure_user(self, user_name: str) -> None:
        try:
            self._call(f"look up IAM user {user_name!r}", self._iam, "get_user", UserName=user_name)
        except PreconditionFailed:
            raise PreconditionFailed(f"IAM user {user_name!r} does not exist in account {self.account_id()}") from None

    def list_keys(self, user_name: str) -> list[AccessKey]:
        keys: list[AccessKey] = []
        paginator = self._iam.get_paginator("list_access_keys")
        try:
            for page in paginator.paginate(UserName=user_name):
                keys.extend(
                    AccessKey(item["AccessKeyId"], KeyStatus(item["Status"]), _aware(item["CreateDate"]))
                    for item in page["AccessKeyMetadata"]
                )
        except (ClientError, BotoCoreError) as error:
            raise translate(error, f"list access keys of {user_name!r}") from None
        return sorted(keys, key=lambda key: key.created)

    def create_key(self, user_name: str) -> NewCredentials:
        response = self._call(
            f"create an access key for {user_name!r}", self._iam, "create_access_key", UserName=user_name
        )
        key = response["AccessKey"]
        return NewCredentials(key_id=key["AccessKeyId"], secret=SecretStr(key["SecretAccessKey"]))

    def set_status(self, user_name: str, key_id: str, status: KeyStatus) -> None:
        self._call(
            f"set key {key_id} of {user_name!r} {status.value}",
            self._iam,
            "update_access_key",
            UserName=user_name,
            AccessKeyId=key_id,
            Status=status.value,
        )

    def delete_key(self, user_name: str, key_id: str) -> None:
        self._call(
            f"delete key {key_id} of {user_name!r}",
            self._iam,
            "delete_access_key",
            UserName=user_name,
            AccessKeyId=key_id,
        )

    def last_used(self, key_id: str) -> LastUsed:
        response = self._call(f"read last use of {key_id}", self._iam, "get_access_key_last_used", AccessKeyId=key_id)
        info = response.get("AccessKeyLastUsed", {})
        used_at = info.get("LastUsedDate")
        return LastUsed(
            key_id=key_id,
            used_at=_aware(used_at) if used_at else None,
            service=_known(info.get("ServiceName")),
            region=_known(info.get("Region")),
        )

    def caller_arn(self, credentials: NewCredentials) -> str:
        """Sign ``sts:GetCallerIdentity`` with the given key (one attempt; the caller retries)."""
        sts = self._session.client(
            "sts",
            aws_access_key_id=credentials.key_id,
            aws_secret_access_key=credentials.secret.get_secret_value(),
            config=Config(retries={"mode": "standard", "max_attempts": 3}),
        )
        try:
            return str(sts.get_caller_identity()["Arn"])
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in _NOT_YET_VALID_CODES:
                raise TransientError(f"key {credentials.key_id} is not accepted yet ({code})") from None
            raise translate(error, f"verify key {credentials.key_id}") from None
        except EndpointConnectionError as error:
            raise TransientError(f"verify key {credentials.key_id}: cannot reach STS ({error})") from None
        except BotoCoreError as error:
            raise translate(error, f"verify key {credentials.key_id}") from None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _known(value: str | None) -> str | None:
    return None if value in (None, "N/A") else value
