"""Object storage adapter: ``s3://bucket/prefix`` (boto3) and ``file:///path`` (local disk).

The only module that talks to storage; ``snapshots`` builds the layout on top of it. Keys are
relative to the TableSync's prefix (DESIGN.md section 5). S3 credentials come from the standard
AWS variables; ``spec.storage.endpoint`` (or ``AWS_ENDPOINT_URL``) points at S3-compatible stores
such as MinIO. Errors are mapped to the job's family: a missing bucket or refused credentials
is an InputError, a network failure a TransientError.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from . import logs
from .errors import START_OVER, InputError, TableSyncError, TransientError

log = logs.get("tablesync_job.storage")


class Storage(Protocol):
    """What the job needs from a store. ``key`` is a '/'-separated path under the prefix."""

    url: str

    def check(self) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes | None: ...
    def upload_file(self, local: Path, key: str) -> None: ...
    def download_file(self, key: str, local: Path) -> None: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def delete(self, key: str) -> None: ...
    def local_path(self, key: str) -> Path | None: ...


def _check_endpoint(endpoint: str, field: str) -> None:
    """InputError naming ``field`` unless ``endpoint`` is http(s)://host[:port][/path].

    The message shows the endpoint, unless it holds an '@': a '/', '?' or '#' in a password
    ends the host part early (so :func:`_without_userinfo` found no user and password), and
    the rest of the password is where the host, port or path belongs.
    """
    parts = urlsplit(endpoint)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a port that is not a number
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok \
            or any(c.isspace() for c in endpoint):
        if "@" in endpoint:
            raise InputError(f"{field}: the URL holds an '@' outside its host part (a '/', "
                             "'?' or '#' in a password ends the host early); drop the user "
                             "and password, which S3 does not use: http(s)://host[:port], "
                             "e.g. http://minio.storage:9000")
        raise InputError(f"{field}: {endpoint!r} is not an endpoint URL; use "
                         "http(s)://host[:port], e.g. http://minio.storage:9000")


def _without_userinfo(endpoint: str, field: str) -> str:
    """``endpoint`` without a ``user:password@`` part, its password registered as a secret.

    S3 signs each request with the access keys and never reads userinfo, so it is dropped
    (with a warning) rather than sent, and never printed: before, a failure message showed
    the endpoint, password and all.
    """
    parts = urlsplit(endpoint)
    if "@" not in parts.netloc:
        return endpoint
    logs.register_secret(endpoint)
    host = parts.netloc.rpartition("@")[2]
    log.warning(f"{field}: the user and password in the endpoint are ignored (S3 signs requests "
                "with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); drop them from the URL")
    return parts._replace(netloc=host).geturl()


def open_storage(url: str, endpoint: str | None = None) -> Storage:
    """The adapter for ``url``; ``endpoint`` overrides ``AWS_ENDPOINT_URL`` for s3://."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return FileStorage(url, Path(parts.path))
    if parts.scheme == "s3":
        return S3Storage(url, parts.netloc, parts.path.strip("/"), endpoint)
    raise InputError(f"spec.storage.url: unsupported scheme {parts.scheme!r}; use s3:// or file://")


# Write errors on file:// storage that only a change of the setup fixes (exit 2).
_SETUP_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


@contextlib.contextmanager
def _file_write_errors(root: Path, path: Path) -> Iterator[None]:
    """A failed write to ``file://`` storage as one line naming the storage.

    A full disk (ENOSPC, EDQUOT) and other I/O errors are TransientErrors (space may be freed,
    a network mount may come back); permissions, a read-only mount or a path in the way are
    InputErrors naming spec.storage.url.
    """
    try:
        yield
    except OSError as err:
        reason = err.strerror or str(err)
        if err.errno in _SETUP_ERRNOS:
            raise InputError(f"spec.storage.url: cannot write {path} ({reason}): make "
                             f"{root} writable for the job, or fix the URL") from None
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TransientError(f"file storage {root} is full ({reason}) writing {path.name}: "
                                 "free space there or move spec.storage.url; a retry may "
                                 "help") from None
        raise TransientError(f"file storage {root}: writing {path.name} failed ({reason}); a "
                             "retry may help") from None


def _durable_replace(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` over ``path`` so that a crash or power loss leaves the old file or the
    new one, whole: the data is flushed before the rename, and the directory after it
    (POSIX rename is atomic but not durable; ext4 and xfs may otherwise keep the rename and
    lose the data, or the other way round)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStorage:
    """A directory on local disk; writes go through a temporary file and a rename."""

    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(
                f"spec.storage.url: cannot create {self.root} ({err.strerror})") from None

    def _path(self, key: str) -> Path:
        return self.root / key

    def _writing(self, path: Path) -> contextlib.AbstractContextManager[None]:
        return _file_write_errors(self.root, path)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with self._writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
            _durable_replace(tmp, path)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def upload_file(self, local: Path, key: str) -> None:
        path = self._path(key)
        with self._writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            shutil.copyfile(local, tmp)
            _durable_replace(tmp, path)

    def download_file(self, key: str, local: Path) -> None:
        shutil.copyfile(self._path(key), local)

    def list(self, prefix: str) -> list[str]:
        """Every file under ``prefix``, ``.tmp`` ones too: a run killed while writing leaves
        one behind, and retention removes folders by what they hold."""
        base = self._path(prefix)
        if not base.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


_INPUT_CODES = {
    "NoSuchBucket": "bucket {bucket} does not exist: create it or fix spec.storage.url",
    "AccessDenied": "access to bucket {bucket} denied: check the credentials Secret "
                    "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and the bucket policy",
    "InvalidAccessKeyId": "the access key is not known to {endpoint}: fix AWS_ACCESS_KEY_ID in "
                          "the credentials Secret",
    "SignatureDoesNotMatch": "the secret key was refused by {endpoint}: fix AWS_SECRET_ACCESS_KEY "
                             "in the credentials Secret",
    "InvalidBucketName": "{bucket} is not a valid bucket name: fix spec.storage.url",
    "KeyTooLongError": "an object name under spec.storage.url is too long for {endpoint}: "
                       "shorten the prefix",
    "XMinioInvalidObjectName": "{endpoint} refuses the object names under spec.storage.url: "
                               "fix its prefix",
    "403": "access to bucket {bucket} denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
           "in the credentials Secret and the bucket policy",
    "404": "bucket {bucket} does not exist: create it or fix spec.storage.url",
}


class S3Storage:
    """An S3 bucket and prefix. Large files go up as multipart uploads (boto3 transfer)."""

    def __init__(self, url: str, bucket: str, prefix: str, endpoint: str | None) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, InvalidRegionError, ProfileNotFound

        self.url = url
        self.bucket = bucket
        self.prefix = prefix
        field = "spec.storage.endpoint" if endpoint else "AWS_ENDPOINT_URL"
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL") or None
        # what an unreachable endpoint's message names: where the endpoint came from
        self._field = field if endpoint else "spec.storage.endpoint"
        if endpoint is not None:
            endpoint = _without_userinfo(endpoint, field)
            _check_endpoint(endpoint, field)
        self.endpoint = endpoint or "AWS S3"
        # Credentials: boto3's chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the
        # credentials Secret, or ambient: web identity, a shared file, instance metadata).
        region_variable = next((name for name in ("AWS_REGION", "AWS_DEFAULT_REGION")
                                if os.environ.get(name)), None)
        region = os.environ[region_variable] if region_variable else "us-east-1"
        try:
            self._client: Any = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=region,
                config=Config(retries={"max_attempts": 5, "mode": "standard"},
                              s3={"addressing_style": "path"},
                              connect_timeout=10, read_timeout=120),
            )
        except ProfileNotFound as err:
            variable = "AWS_PROFILE" if os.environ.get("AWS_PROFILE") else "AWS_DEFAULT_PROFILE"
            raise InputError(f"{variable}: {err.kwargs.get('profile')!r} is not a profile "
                             "of the AWS config files (AWS_CONFIG_FILE, "
                             "AWS_SHARED_CREDENTIALS_FILE, or ~/.aws): name one they have, or "
                             "unset it") from None
        except InvalidRegionError:  # (a ValueError too, but not the endpoint's)
            raise InputError(f"{region_variable}: {region!r} is not an AWS region name: use "
                             "letters, digits and '-', such as eu-west-1") from None
        except ValueError as err:  # botocore's "Invalid endpoint"
            raise InputError(f"{field}: {err}; use http(s)://host[:port]") from None
        except BotoCoreError as err:  # an AWS config file it cannot parse, AWS_DEFAULTS_MODE
            raise InputError(f"the AWS configuration (AWS_* variables, AWS_CONFIG_FILE, "
                             f"AWS_SHARED_CREDENTIALS_FILE, ~/.aws) is not usable: {err}; fix "
                             "or unset what it names") from None
        self._transfer = TransferConfig(multipart_threshold=64 * 2**20,
                                        multipart_chunksize=64 * 2**20, max_concurrency=4)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, err: Exception, key: str | None = None) -> TableSyncError:
        """InputError for what fixing the spec, Secret or bucket cures; else TransientError.

        ``key``: the object asked for, when a 404 means that object is missing (not the
        bucket).
        """
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import ClientError, EndpointResolutionError, NoCredentialsError

        if isinstance(err, NoCredentialsError):
            return InputError("spec.storage: no S3 credentials found (AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY unset, no profile, no identity): in a "
                              "cluster set spec.storage.credentialsSecretRef (a Secret with "
                              "those keys) or give the job an identity "
                              "(spec.job.serviceAccountName); run by hand, export the two "
                              "variables (the job reads no Secret itself)")
        if isinstance(err, EndpointResolutionError):
            return InputError(f"spec.storage.endpoint: {err}; use http(s)://host[:port]")
        if isinstance(err, S3UploadFailedError) and isinstance(err.__context__, ClientError):
            err = err.__context__  # boto3's transfer wraps the refusal (AccessDenied, ...)
        if isinstance(err, ClientError):
            code = str(err.response.get("Error", {}).get("Code", ""))
            if key is not None and code in ("404", "NoSuchKey"):
                return InputError(f"spec.storage.url: {self.url}/{key} is missing; the stored "
                                  f"snapshot or delta is incomplete; {START_OVER}")
            code = str(err.response.get("Error", {}).get("Code", ""))
            template = _INPUT_CODES.get(code)
            if template:
                return InputError("spec.storage: " + template.format(
                    bucket=self.bucket, endpoint=self.endpoint))
            return TransientError(f"storage {self.endpoint} bucket {self.bucket}: {code or err}")
        return TransientError(f"storage {self.endpoint} unreachable: {type(err).__name__}: {err}; "
                              f"check {self._field}; a retry may help")

    def _call(self, fn: Any, *args: Any, key: str | None = None, **kwargs: Any) -> Any:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError, S3UploadFailedError) as err:
            raise self._fail(err, key) from None

    def check(self) -> None:
        self._call(self._client.head_bucket, Bucket=self.bucket)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(self._client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            return bytes(obj["Body"].read())
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._fail(err) from None
        except BotoCoreError as err:
            raise self._fail(err) from None

    def upload_file(self, local: Path, key: str) -> None:
        self._call(self._client.upload_file, str(local), self.bucket, self._key(key),
                   Config=self._transfer)

    def download_file(self, key: str, local: Path) -> None:
        self._call(self._client.download_file, self.bucket, self._key(key), str(local),
                   Config=self._transfer, key=key)

    def list(self, prefix: str) -> list[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        full = self._key(prefix)
        keys: list[str] = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        pages = self._call(lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=full)))
        for page in pages:
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> None:
        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
            answer = self._call(self._client.delete_objects, Bucket=self.bucket,
                                Delete={"Objects": batch, "Quiet": True})
            refused = answer.get("Errors") or []
            if refused:  # one answer per key, not an error response: easy to miss
                first = refused[0]
                raise TransientError(
                    f"storage: {len(refused)} object(s) under {self.url}/{prefix} were not "
                    f"deleted ({first.get('Code')}: {first.get('Message')}); the credentials "
                    "need s3:DeleteObject on the bucket for retention")

    def delete(self, key: str) -> None:
        self._call(self._client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def local_path(self, key: str) -> Path | None:
        return None
