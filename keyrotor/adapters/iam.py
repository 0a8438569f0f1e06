"""IAM and STS behind a small typed interface, with one real implementation over boto3.

botocore's ``standard`` retry mode retries throttling, 5xx and connection errors; everything else is a logic
error and is translated once, here, into a keyrotor error that says what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from pydantic import SecretStr
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from keyrotor.core.errors import (
    AwsError,
    AwsUnavailable,
    CreateAnswerLost,
    KeyNotAccepted,
    KeyrotorError,
    PreconditionFailed,
    TransientError,
)
from keyrotor.core.model import AccessKey, KeyStatus, LastUsed, NewCredentials
from keyrotor.core.timestamps import as_utc

T = TypeVar("T")

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

    def user_tags(self, user_name: str) -> dict[str, str]: ...


def translate(error: Exception, action: str) -> KeyrotorError:
    """Map a botocore failure to the keyrotor error an operator can act on."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _TRANSIENT_CODES or status >= 500:
            return AwsUnavailable(f"{action}: AWS kept failing after retries ({code}: {message})")
        if code == "NoSuchEntity":
            return PreconditionFailed(f"{action}: {message or 'no such entity'}")
        if code == "LimitExceeded":
            return PreconditionFailed(f"{action}: IAM allows at most two access keys per user ({message})")
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            return AwsError(
                f"{action}: access denied ({message}). keyrotor's AWS identity needs policies/iam-policy.json, which "
                "lets it change the keys of users tagged keyrotor:managed=true only (never its own)"
            )
        if code in _NOT_YET_VALID_CODES:
            return AwsError(f"{action}: AWS rejected the credentials ({code}: {message})")
        return AwsError(f"{action}: {code}: {message}")
    if isinstance(error, NoCredentialsError):
        return AwsError(f"{action}: no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID)")
    if isinstance(error, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError | ConnectTimeoutError):
        return AwsUnavailable(
            f"{action}: cannot reach AWS ({error}); check AWS_ENDPOINT_URL, the network and AWS's health"
        )
    return AwsError(f"{action}: {error}")


def call(client: Any, action: str, operation: str, **kwargs: Any) -> dict[str, Any]:
    """One boto3 call (``client.<operation>(**kwargs)``), its failure translated into a keyrotor error once."""
    try:
        response: dict[str, Any] = getattr(client, operation)(**kwargs)
    except (ClientError, BotoCoreError) as error:
        raise translate(error, action) from None
    return response


class Boto3Iam:
    """:class:`IamGateway` over boto3. Region, profile and ``AWS_ENDPOINT_URL`` come from the standard settings.

    Idempotent calls are retried by botocore (throttling, 5xx, connection errors) and, beyond that, through
    outages of up to ``retry_for``. ``CreateAccessKey`` is never retried blindly: AWS has no idempotency token for
    it, so a retry after an answer lost on the way back would create a second key whose secret nobody holds.
    """

    def __init__(
        self, session: boto3.Session | None = None, max_attempts: int = 10, retry_for: timedelta = timedelta(minutes=5)
    ) -> None:
        self._session = session or boto3.Session()
        self._config = Config(retries={"mode": "standard", "max_attempts": max_attempts})
        self._iam = self._session.client("iam", config=self._config)
        once = Config(retries={"mode": "standard", "total_max_attempts": 1})  # max_attempts counts retries only
        self._iam_once = self._session.client("iam", config=once)
        self._sts = self._session.client("sts", config=self._config)
        self._account_id: str | None = None
        self._retry_for = retry_for

    def _call(self, action: str, client: Any, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One idempotent call, retried through an outage of up to ``retry_for``."""
        return self._through_outages(call, client, action, operation, **kwargs)

    def _through_outages(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        retrying = Retrying(
            retry=retry_if_exception_type(AwsUnavailable),
            stop=stop_after_delay(self._retry_for.total_seconds()),
            wait=wait_exponential(multiplier=0.5, max=15),
            reraise=True,
        )
        return retrying(function, *args, **kwargs)

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
        return self._through_outages(self._list_keys, user_name)

    def _list_keys(self, user_name: str) -> list[AccessKey]:
        keys: list[AccessKey] = []
        paginator = self._iam.get_paginator("list_access_keys")
        try:
            for page in paginator.paginate(UserName=user_name):
                keys.extend(
                    AccessKey(item["AccessKeyId"], KeyStatus(item["Status"]), as_utc(item["CreateDate"]))
                    for item in page["AccessKeyMetadata"]
                )
        except (ClientError, BotoCoreError) as error:
            raise translate(error, f"list access keys of {user_name!r}") from None
        return sorted(keys, key=lambda key: key.created)

    def create_key(self, user_name: str) -> NewCredentials:
        """One attempt. An unclear answer (no response, 5xx, throttling) raises CreateAnswerLost: the caller must
        look at the user's keys before trying again."""
        action = f"create an access key for {user_name!r}"
        try:
            response = self._iam_once.create_access_key(UserName=user_name)
        except (ClientError, BotoCoreError) as error:
            translated = translate(error, action)
            if isinstance(translated, AwsUnavailable):
                raise CreateAnswerLost(f"{translated} (a key may have been created)") from None
            raise translated from None
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
        """Delete the key; a key that is already gone (a retry after an answer lost) counts as deleted."""
        try:
            self._call(
                f"delete key {key_id} of {user_name!r}",
                self._iam,
                "delete_access_key",
                UserName=user_name,
                AccessKeyId=key_id,
            )
        except PreconditionFailed:
            if any(key.key_id == key_id for key in self.list_keys(user_name)):
                raise

    def last_used(self, key_id: str) -> LastUsed:
        response = self._call(f"read last use of {key_id}", self._iam, "get_access_key_last_used", AccessKeyId=key_id)
        info = response.get("AccessKeyLastUsed", {})
        used_at = info.get("LastUsedDate")
        return LastUsed(
            key_id=key_id,
            used_at=as_utc(used_at) if used_at else None,
            service=_known(info.get("ServiceName")),
            region=_known(info.get("Region")),
        )

    def user_tags(self, user_name: str) -> dict[str, str]:
        """The user's tags (ListUserTags, paginated): ``keyrotor:exempt``, the owner."""
        return self._through_outages(self._user_tags, user_name)

    def _user_tags(self, user_name: str) -> dict[str, str]:
        tags: dict[str, str] = {}
        try:
            for page in self._iam.get_paginator("list_user_tags").paginate(UserName=user_name):
                tags.update({tag["Key"]: tag["Value"] for tag in page.get("Tags", [])})
        except (ClientError, BotoCoreError) as error:
            raise translate(error, f"list the tags of {user_name!r}") from None
        return tags

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
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _NOT_YET_VALID_CODES:
                raise KeyNotAccepted(f"key {credentials.key_id} is not accepted ({code})") from None
            if code in _TRANSIENT_CODES or status >= 500:
                raise TransientError(f"verify key {credentials.key_id}: STS answered {code or status}") from None
            raise translate(error, f"verify key {credentials.key_id}") from None
        except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError) as error:
            raise TransientError(f"verify key {credentials.key_id}: cannot reach STS ({error})") from None
        except BotoCoreError as error:
            raise TransientError(f"verify key {credentials.key_id}: {error}") from None


def _known(value: str | None) -> str | None:
    return None if value in (None, "N/A") else value
