"""Image references and the few Registry HTTP API v2 calls publish and pin need.

``parse_reference`` is pure (the distribution/reference grammar, enough of it for the
references people write). ``RegistryClient`` asks a registry which digest a tag points at:
a ``HEAD /v2/<name>/manifests/<tag>`` with the Accept headers of every manifest kind (OCI
index and manifest, Docker manifest list and v2 manifest), so a multi-platform tag resolves
to its index digest, exactly what ``docker pull repo@sha256:...`` expects.

Auth follows the registry's ``WWW-Authenticate`` challenge (Bearer token or Basic) with the
credentials docker itself would use (``~/.docker/config.json``, credential helpers, through
the Docker SDK's ``docker.auth``); anonymous when there are none. Loopback registries
(127.0.0.0/8, ``localhost``, ``::1``) are spoken to over plain HTTP, as dockerd does.
Transient failures (connection errors, 429, 5xx) are retried by urllib3's ``Retry``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from lockdock.errors import RegistryError, UsageError
from lockdock.tags import TAG

DOCKER_HUB = "docker.io"
_DOCKER_HUB_API = "registry-1.docker.io"
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
# Matched whole (``fullmatch``: ``$`` would let a trailing newline through); ASCII ``\w``.
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_TOKEN = re.compile(r"[!-~]+")  # visible ASCII: what an Authorization header can carry
_REGISTRY_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")


def is_digest(text: object) -> bool:
    """Whether ``text`` is a digest as lockdock writes and accepts them (``sha256:`` + 64 hex)."""
    return isinstance(text, str) and _DIGEST.fullmatch(text) is not None


def is_tag(text: object) -> bool:
    """Whether ``text`` is a valid image tag (the distribution/reference grammar)."""
    return isinstance(text, str) and TAG.fullmatch(text) is not None


class UnknownTagError(RegistryError):
    """The registry does not know this tag (or repository)."""


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference. ``name`` is the repository as written (no tag/digest)."""

    name: str
    registry: str  # "docker.io" when the reference names none
    repository: str  # path inside the registry ("library/debian" on Docker Hub)
    tag: str | None
    digest: str | None

    @property
    def key(self) -> tuple[str, str]:
        """The repository whatever its spelling: ``debian`` is ``docker.io/library/debian``."""
        return (self.registry, self.repository)

    def with_tag(self, tag: str) -> ImageRef:
        return ImageRef(self.name, self.registry, self.repository, tag, None)

    def pinned(self, digest: str) -> str:
        """``name:tag@digest`` (``name@digest`` when there is no tag)."""
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.name}{tag}@{digest}"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"


def is_loopback_host(registry: str) -> bool:
    if registry.startswith("["):  # [::1]:5000, [::1]
        host = registry[1:].split("]", 1)[0]
    else:
        host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_reference(text: str) -> ImageRef:
    """Parse ``[registry/]path[:tag][@sha256:hex]``; UsageError naming ``text`` if invalid."""
    rest = text.strip()
    digest: str | None = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise UsageError(f"Image reference {text!r} has an invalid digest {digest!r}.")
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not TAG.fullmatch(tag):
            raise UsageError(f"Image reference {text!r} has an invalid tag {tag!r}.")
    name = rest
    first, _, remainder = name.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
        if not _REGISTRY_HOST.fullmatch(registry):
            raise UsageError(f"Image reference {text!r} has an invalid registry {registry!r} "
                             "(a host name or IP address, optionally :PORT).")
    else:
        registry, path = DOCKER_HUB, name
        if "/" not in path:
            path = f"library/{path}"
    if not path or not all(_PATH_COMPONENT.fullmatch(c) for c in path.split("/")):
        raise UsageError(
            f"Image reference {text!r} is not a valid repository name (lowercase letters, "
            "digits and separators, components separated by '/')."
        )
    return ImageRef(name=name, registry=registry, repository=path, tag=tag, digest=digest)


def local_image_option(text: str, option: str = "--image") -> str:
    """``text``, given to ``option`` to name a local image (a reference or an image id),
    checked before the engine is asked; UsageError naming the option when it is none."""
    if not text.strip():
        raise UsageError(f"Option {option} is empty: give an image reference "
                         "(REPO[:TAG][@sha256:DIGEST]) or an image id, or leave the option out.")
    if text != text.strip():  # as --name and --base-image: the engine would refuse it
        raise UsageError(f"Option {option} {text!r} has surrounding spaces: pass the "
                         "reference alone.")
    try:
        parse_reference(text)
    except UsageError as error:
        raise UsageError(f"Option {option}: {error.message}") from None
    return text


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', params))


def _json_answer(body: bytes, source: str, fix: str = "") -> Any:
    """A registry's answer ``body`` as JSON, through ``textio.load_json`` (its limits on depth
    and number size included); RegistryError naming ``source`` when it is not JSON."""
    from lockdock.textio import load_json

    return load_json(body.decode("utf-8", errors="replace"), source, RegistryError, fix=fix)


def _found(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _answered(response: Any) -> str:
    """``text/html, 18 bytes``: what an answer was, for messages."""
    kind = str(response.headers.get("Content-Type", "")) or "no content type"
    return f"{kind}, {len(response.content)} bytes"


def check_manifest(ref: ImageRef, body: bytes, content_type: str, header: str | None) -> None:
    """RegistryError unless ``body`` is a manifest or index whose sha256 agrees with every
    digest claimed for it (the ``Docker-Content-Digest`` header, the reference's digest).

    Pure. What answers ``200`` is not necessarily a registry: a registry's web UI, a captive
    portal or a wrong port answers every path with an HTML page, and its hash is no digest.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    declared = None
    try:
        document = _json_answer(body, f"The manifest of {ref}")
        declared = document.get("mediaType") if isinstance(document, dict) else None
    except RegistryError:
        document = None
    if media_type not in MANIFEST_TYPES or not isinstance(document, dict) or (
        declared is not None and declared not in MANIFEST_TYPES
    ):
        raise RegistryError(
            f"{ref.registry} did not answer like a registry for {ref}: it sent "
            f"{content_type or 'no content type'} ({len(body)} bytes), not an image manifest "
            f"or index ({', '.join(MANIFEST_TYPES)}). Is {ref.registry} a registry (not its "
            "web page, a proxy's login page or another port)?"
        )
    actual = f"sha256:{hashlib.sha256(body).hexdigest()}"
    for claimed, source in ((header, "its Docker-Content-Digest header"),
                            (ref.digest, "the reference")):
        if claimed and _DIGEST.fullmatch(claimed) and claimed != actual:
            raise RegistryError(
                f"The manifest {ref.registry} sent for {ref} has digest {actual}, but "
                f"{source} says {claimed}: the registry (or something between) altered it."
            )


def _token(ref: ImageRef, realm: str, response: Any) -> str:
    """The token in a token endpoint's answer: a JSON object with a ``token`` (or, OAuth2's
    spelling, ``access_token``) string."""
    source = (f"The answer of registry {ref.registry}'s token endpoint {realm} for {ref.name} "
              f"({_answered(response)})")
    question = (f"Is {realm} (the realm of the registry's WWW-Authenticate challenge) a token "
                "service, not a login page or a proxy?")
    body = _json_answer(bytes(response.content), source, f"That is not a JSON token. {question}")
    token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):  # it goes into a header
        raise RegistryError(f"{source} is not a JSON token (an object with a `token` or "
                            f"`access_token` string): found {_found(body)}. {question}")
    return token


def _image_config(data: Any, source: str, fix: str) -> dict[str, Any]:
    """``data`` when it is an image config as far as publish reads one (``os``,
    ``architecture``, ``created``, ``config.Labels``), else RegistryError naming ``source``."""
    def wrong(field: str, expected: str, value: object) -> RegistryError:
        return RegistryError(f"{source} is not an image config: `{field}` should be "
                             f"{expected}, found {_found(value)}. {fix}")

    if not isinstance(data, dict):
        raise wrong("(the document)", "a JSON object", data)
    for key in ("os", "architecture", "created"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise wrong(key, "a string", data[key])
    section = data.get("config")
    if section is not None and not isinstance(section, dict):
        raise wrong("config", "an object", section)
    labels = (section or {}).get("Labels")
    if labels is not None and (not isinstance(labels, dict)
                               or not all(isinstance(v, str) for v in labels.values())):
        raise wrong("config.Labels", "an object of strings", labels)
    return data


class RegistryClient:
    """Resolve tags and read manifests over the Registry HTTP API v2."""

    def __init__(self, *, timeout: float = 30.0, retries: int = 4) -> None:
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        retry = Retry(
            total=retries,
            backoff_factor=0.5,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=("HEAD", "GET"),
            raise_on_status=False,
        )
        self._session = requests.Session()
        self._session.mount("http://", HTTPAdapter(max_retries=retry))
        self._session.mount("https://", HTTPAdapter(max_retries=retry))
        self._timeout = timeout
        self._tokens: dict[tuple[str, str], str] = {}

    @staticmethod
    def base_url(registry: str) -> str:
        host = _DOCKER_HUB_API if registry == DOCKER_HUB else registry
        scheme = "http" if is_loopback_host(registry) else "https"
        return f"{scheme}://{host}"

    def _credentials(self, registry: str) -> tuple[str, str] | None:
        import docker.auth

        try:
            config = docker.auth.load_config()
            auth = config.resolve_authconfig(registry)
        except Exception:  # a broken docker config is not ours to judge: go anonymous
            return None
        if auth and auth.get("Username") and auth.get("Password"):
            return (str(auth["Username"]), str(auth["Password"]))
        return None

    def _request(self, method: str, ref: ImageRef, path: str, accept: str) -> Any:
        import requests

        url = f"{self.base_url(ref.registry)}/v2/{ref.repository}/{path}"
        headers = {"Accept": accept}
        token = self._tokens.get(ref.key)
        if token:
            headers["Authorization"] = token
        try:
            response = self._session.request(method, url, headers=headers, timeout=self._timeout)
            if response.status_code == 401:
                header = self._authorize(ref, response.headers.get("WWW-Authenticate", ""))
                headers["Authorization"] = header
                response = self._session.request(
                    method, url, headers=headers, timeout=self._timeout
                )
        except requests.RequestException as error:
            raise RegistryError(
                f"Registry {ref.registry} could not be reached for {ref.name}: {error}"
            ) from None
        if response.status_code in (401, 403):
            raise RegistryError(
                f"Registry {ref.registry} rejected access to {ref.name} "
                f"(HTTP {response.status_code}).",
                hint="Log in with `docker login` (lockdock uses docker's credentials).",
            )
        return response

    def _authorize(self, ref: ImageRef, challenge: str) -> str:
        import requests

        scheme, params = _parse_challenge(challenge)
        credentials = self._credentials(ref.registry)
        if scheme == "basic":
            if credentials is None:
                raise RegistryError(
                    f"Registry {ref.registry} asks for a login to read {ref.name} and docker "
                    "has no credentials for it.",
                    hint=f"Run `docker login {ref.registry}`.",
                )
            value = requests.auth._basic_auth_str(*credentials)
        elif scheme == "bearer" and "realm" in params:
            query = {"scope": f"repository:{ref.repository}:pull"}
            if "service" in params:
                query["service"] = params["service"]
            response = self._session.get(
                params["realm"], params=query, auth=credentials, timeout=self._timeout
            )
            if response.status_code != 200:
                raise RegistryError(
                    f"Registry {ref.registry} refused a token to read {ref.name} "
                    f"(HTTP {response.status_code} from {params['realm']}).",
                    hint=f"Check `docker login {ref.registry}`.",
                )
            value = f"Bearer {_token(ref, params['realm'], response)}"
        else:
            raise RegistryError(
                f"Registry {ref.registry} asked for an authentication lockdock does not speak: "
                f"{challenge or '(no WWW-Authenticate header)'}."
            )
        self._tokens[ref.key] = value
        return value

    def resolve(self, ref: ImageRef) -> str:
        """The digest ``ref``'s tag points at; RegistryError naming the tag if it has none."""
        target = ref.digest or ref.tag or "latest"
        response = self._request("HEAD", ref, f"manifests/{target}", ", ".join(MANIFEST_TYPES))
        if response.status_code == 404:
            raise UnknownTagError(
                f"Tag {ref.tag or 'latest'!r} of {ref.name} does not exist in registry "
                f"{ref.registry}."
            )
        if response.status_code != 200:
            raise RegistryError(
                f"Registry {ref.registry} answered HTTP {response.status_code} for "
                f"{ref.name}:{target}."
            )
        digest = response.headers.get("Docker-Content-Digest")
        if digest and _DIGEST.fullmatch(digest):
            return str(digest)
        # No digest header: the digest is the hash of the manifest body, and only of a body
        # that is a manifest or index (a web UI or captive portal answers 200 text/html).
        body, _media_type = self.manifest_bytes(
            ref.with_tag(target) if ref.digest is None else ref
        )
        return f"sha256:{hashlib.sha256(body).hexdigest()}"

    def manifest_bytes(self, ref: ImageRef) -> tuple[bytes, str]:
        """The raw manifest (or index) and its media type."""
        target = ref.digest or ref.tag or "latest"
        response = self._request("GET", ref, f"manifests/{target}", ", ".join(MANIFEST_TYPES))
        if response.status_code == 404:
            raise UnknownTagError(f"{ref} does not exist in registry {ref.registry}.")
        if response.status_code != 200:
            raise RegistryError(
                f"Registry {ref.registry} answered HTTP {response.status_code} for {ref}."
            )
        body = bytes(response.content)
        media_type = str(response.headers.get("Content-Type", ""))
        check_manifest(ref, body, media_type, response.headers.get("Docker-Content-Digest"))
        return body, media_type

    def image_config(self, ref: ImageRef) -> dict[str, Any]:
        """The image config (``os``, ``architecture``, ``created``...) of a single-platform
        manifest; RegistryError naming ``ref`` when the registry's answer is not one."""
        body, _media_type = self.manifest_bytes(ref)
        manifest = _json_answer(body, f"The manifest of {ref}")  # an object: check_manifest
        section = manifest.get("config")
        config = section.get("digest") if isinstance(section, dict) else None
        if not is_digest(config):
            raise RegistryError(f"{ref} is not a single-platform image manifest: it names no "
                                "config blob (`config.digest`, sha256:<64 hex digits>).")
        response = self._request("GET", ref, f"blobs/{config}", "*/*")
        if response.status_code != 200:
            raise RegistryError(
                f"Registry {ref.registry} answered HTTP {response.status_code} for the config "
                f"blob of {ref}."
            )
        content = bytes(response.content)
        source = f"The config blob {config} of {ref} ({_answered(response)})"
        fix = f"Push {ref} again (`lockdock publish --platform-only`)."
        actual = f"sha256:{hashlib.sha256(content).hexdigest()}"
        if actual != config:
            raise RegistryError(f"{source} has digest {actual}: the registry (or something "
                                f"between) altered it. {fix}")
        return _image_config(_json_answer(content, source, fix), source, fix)

    def tag_digest_or_none(self, ref: ImageRef) -> str | None:
        """Like ``resolve`` but None when the tag does not exist yet."""
        try:
            return self.resolve(ref)
        except UnknownTagError:
            return None
