"""Node configuration: `config.toml` read with tomllib into frozen dataclasses.

Validation happens once, at start-up. Every problem raises :class:`ConfigError` whose message names the
offending key (e.g. ``destinations.pacs.port``), so an administrator can fix the file without reading code.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from node.configtable import ConfigError, ConfigTable
from node.registry import DEFAULT_REGISTRY, Registry
from node.resend import DUPLICATE_POLICIES
from node.tracers import TRACER_FIELDS, TracerRule, TracerRules
from node.workflow import CORE_OUTPUT_KINDS, CommonSettings, Workflow

__all__ = [
    "ConfigError",
    "ConfigTable",
    "NodeConfig",
    "SecurityConfig",
    "TlsConfig",
    "CompletionConfig",
    "AnalysisConfig",
    "DestinationConfig",
    "OutboxConfig",
    "HealthConfig",
    "ReceiveConfig",
    "ClassifyConfig",
    "DashboardConfig",
    "WebhookConfig",
    "NotificationsConfig",
    "RetentionConfig",
    "Config",
    "NOTIFY_EVENTS",
    "is_loopback",
    "OUTPUT_KINDS",
    "PM_FALLBACKS",
    "load_config",
    "parse_config",
]

#: Output kinds every node knows (routing keys); registered workflows may add more (Registry.output_kinds).
OUTPUT_KINDS = CORE_OUTPUT_KINDS
#: What to send where a peer refuses Parametric Maps.
PM_FALLBACKS = ("secondary-capture", "none")
#: Events a webhook may subscribe to (node/notifications.py).
NOTIFY_EVENTS = ("case-done", "case-failed", "case-held", "case-stalled", "destination-failing",
                 "destination-recovered", "disk-low")

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: 16 chars, no backslash/control

S = TypeVar("S")
@dataclass(frozen=True)
class TlsConfig:
    """DICOM TLS (PS3.15 B.1). Paths are PEM files; `ca_file` verifies the peer."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    require_client_cert: bool = True


@dataclass(frozen=True)
class NodeConfig:
    ae_title: str = "LIVERNODE"
    host: str = "0.0.0.0"
    port: int = 11112
    data_dir: Path = Path("var")
    max_pdu_size: int = 4 * 1024 * 1024  # largest PDU a peer may send us (bounds memory per association)
    max_associations: int = 10
    log_level: str = "INFO"
    min_free_disk_mb: int = 1024  # below this free space on data_dir's volume C-STOREs get 0xA700; 0 = off


@dataclass(frozen=True)
class SecurityConfig:
    allowed_calling_aes: tuple[str, ...] = ()  # empty = accept any calling AE
    tls: TlsConfig | None = None


@dataclass(frozen=True)
class CompletionConfig:
    stable_seconds: float = 30.0


@dataclass(frozen=True)
class AnalysisConfig:
    """The ``[analysis]`` table: settings all workflows share, and each workflow's own settings by name.

    Each registered workflow parses its ``[analysis.NAME]`` sub-table into its own frozen settings dataclass
    (``Workflow.parse_settings``); :meth:`settings_for` hands it back typed.
    """

    common: CommonSettings = field(default_factory=CommonSettings)
    workflows: Mapping[str, Any] = field(default_factory=dict)  # workflow name -> its settings dataclass

    @property
    def liver_roi_names(self) -> tuple[str, ...]:
        return self.common.liver_roi_names

    def settings_for(self, workflow: Workflow[S, Any]) -> S:
        """The workflow's settings (its defaults when the configuration was made without it, e.g. in tests)."""
        found = self.workflows.get(workflow.name)
        if found is None:
            found = workflow.parse_settings(ConfigTable(f"analysis.{workflow.name}", {}), self.common)
        if not isinstance(found, workflow.settings_type):
            raise TypeError(f"settings of {workflow.name!r} are a {type(found).__name__}, "
                            f"not {workflow.settings_type.__name__}")
        return cast(S, found)


@dataclass(frozen=True)
class DestinationConfig:
    """Where results go. DICOM (ae_title/host/port) or a folder (path)."""

    name: str
    outputs: tuple[str, ...]
    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    folder: Path | None = None
    tls: TlsConfig | None = None
    parametric_map_fallback: str | None = None  # None: the [outbox] setting

    @property
    def kind(self) -> str:
        return "folder" if self.folder is not None else "dicom"


@dataclass(frozen=True)
class OutboxConfig:
    max_attempts: int = 10
    backoff_initial_seconds: float = 5.0
    backoff_max_seconds: float = 600.0
    batch_size: int = 200
    #: where a peer refuses Parametric Map: "secondary-capture" sends a rendition instead, "none" parks the item
    parametric_map_fallback: str = "secondary-capture"


@dataclass(frozen=True)
class HealthConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True)
class ReceiveConfig:
    """The receive edge: what is accepted, how long a connection may take to ask for an association, and what a
    re-sent SOP instance with different content does (node.resend)."""

    strict: bool = False  # True: refuse what the tolerant default stores as "unusable" (see node/header.py)
    negotiation_timeout_seconds: float = 5.0  # connect (TLS handshake included) to A-ASSOCIATE-RQ received
    network_timeout_seconds: float = 60.0  # an association whose peer sends nothing this long is closed
    max_negotiating: int = 32  # connections not yet associated, all peers together
    max_negotiating_per_address: int = 8  # ... from one address
    #: when every association slot is taken, an association silent this long (nothing in progress) of an address
    #: holding at least two slots more than a newcomer's is aborted to make room for it (node/admission.py)
    idle_association_seconds: float = 10.0
    fast_path: bool = True  # node/netfast.py's tuned pynetdicom receive path; False = stock pynetdicom
    #: "replace": the new copy is used, the stored one kept as superseded; "keep-first": the reverse
    duplicates: str = "replace"


@dataclass(frozen=True)
class ClassifyConfig:
    """``[classify]``: how series are recognised beyond their headers (node.classify, node.tracers)."""

    tracers: TracerRules = field(default_factory=TracerRules)


@dataclass(frozen=True)
class DashboardConfig:
    """The web dashboard under /ui/ on the [health] host and port. Auth and TLS protect every page but
    /livez and /readyz; both are required when that host is not a loopback address."""

    enabled: bool = False
    token: str = ""            # access token (Authorization: Bearer, or the login form's cookie)
    username: str = ""         # HTTP basic auth (with password)
    password: str = ""
    cert_file: Path | None = None  # TLS for the whole HTTP server
    key_file: Path | None = None
    actions: bool = True       # operator actions (resend, reprocess, release); false = read-only

    @property
    def auth_required(self) -> bool:
        return bool(self.token or self.username)

    @property
    def tls(self) -> bool:
        return self.cert_file is not None


@dataclass(frozen=True)
class WebhookConfig:
    """One webhook: a JSON POST per event, retried with backoff; no patient data unless include_phi."""

    name: str
    url: str
    events: tuple[str, ...] = NOTIFY_EVENTS
    include_phi: bool = False
    secret: str = ""           # when set: X-LiverNode-Signature: sha256=HMAC(secret, body)
    timeout_seconds: float = 10.0
    max_attempts: int = 8
    backoff_initial_seconds: float = 5.0
    backoff_max_seconds: float = 900.0


@dataclass(frozen=True)
class NotificationsConfig:
    stalled_after_minutes: float = 120.0           # a case receiving/stable longer than this is "stalled"
    destination_failing_after_minutes: float = 30.0  # a destination failing longer than this alerts
    check_interval_seconds: float = 15.0
    webhooks: tuple[WebhookConfig, ...] = ()


@dataclass(frozen=True)
class RetentionConfig:
    """Days after a case is done and all its outputs delivered; 0 keeps that kind of data forever."""

    received_days: float = 0.0     # received instances (and their index rows)
    outbox_days: float = 0.0       # delivered output files in data_dir/outbox (the manifest stays)
    superseded_days: float = 0.0   # superseded copies of re-sent instances (data_dir/superseded)
    check_interval_minutes: float = 60.0

    @property
    def enabled(self) -> bool:
        return bool(self.received_days or self.outbox_days or self.superseded_days)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and "localhost" stay on this machine; anything else (0.0.0.0 too) does not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    completion: CompletionConfig = field(default_factory=CompletionConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    destinations: tuple[DestinationConfig, ...] = ()
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    receive: ReceiveConfig = field(default_factory=ReceiveConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    source: Path | None = None  # the file it came from, for messages
    workflows: Registry = DEFAULT_REGISTRY  # the workflows this configuration was validated for
    notices: tuple[str, ...] = ()  # deprecations found while reading (logged at start-up)

    def destinations_for(self, output_kind: str) -> tuple[DestinationConfig, ...]:
        return tuple(d for d in self.destinations if output_kind in d.outputs)

    def unrouted_outputs(self) -> tuple[str, ...]:
        """Output kinds no destination takes (they would stay in the outbox folder only)."""
        return tuple(k for k in self.workflows.output_kinds if not self.destinations_for(k))

    @property
    def http_enabled(self) -> bool:
        """The node's HTTP server runs for health and/or the dashboard (/metrics is served on it too)."""
        return self.health.enabled or self.dashboard.enabled

    def with_overrides(self, **sections: Any) -> Config:
        """A copy with whole sections replaced (used by tests and the demo)."""
        return dataclasses.replace(self, **sections)


# ---------------------------------------------------------------- validation helpers


def _ae(sec: ConfigTable, name: str, default: str | None) -> str | None:
    v = sec.string(name, default)
    if v is not None and (not _AE_RE.match(v) or not v.strip()):
        raise ConfigError(sec.key(name), f"not a valid AE title (1-16 printable characters, no backslash): {v!r}")
    return v.strip() if v is not None else None


def _host(sec: ConfigTable, name: str, default: str | None) -> str | None:
    v = sec.string(name, default)
    if v is None:
        return None
    if not v or any(c.isspace() for c in v):
        raise ConfigError(sec.key(name), f"not a valid host name or address: {v!r}")
    try:
        ipaddress.ip_address(v)
    except ValueError:
        if not re.match(r"^[A-Za-z0-9.-]+$", v):
            raise ConfigError(sec.key(name), f"not a valid host name or address: {v!r}") from None
    return v


def _readable_file(sec: ConfigTable, name: str, base: Path, required: bool) -> Path | None:
    v = sec.string(name, None)
    if v is None:
        if required:
            raise ConfigError(sec.key(name), "is required")
        return None
    p = Path(v)
    if not p.is_absolute():
        p = base / p
    try:
        with open(p, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(sec.key(name), f"cannot read {p}: {exc.strerror or exc}") from None
    return p


def _required_file(sec: ConfigTable, name: str, base: Path) -> Path:
    p = _readable_file(sec, name, base, True)
    assert p is not None  # required=True raises instead of returning None
    return p


def _tls(parent: ConfigTable, base: Path) -> TlsConfig | None:
    if not parent.has("tls"):
        parent.get("tls")
        return None
    sec = ConfigTable(parent.key("tls"), parent.get("tls"))
    tls = TlsConfig(
        cert_file=_required_file(sec, "cert_file", base),
        key_file=_required_file(sec, "key_file", base),
        ca_file=_readable_file(sec, "ca_file", base, False),
        require_client_cert=sec.boolean("require_client_cert", True),
    )
    sec.finish()
    if tls.require_client_cert and tls.ca_file is None and parent.prefix == "security":
        raise ConfigError(sec.key("ca_file"), "is required when require_client_cert = true")
    return tls


def parse_config(data: Mapping[str, Any], base_dir: Path | None = None, source: Path | None = None,
                 registry: Registry = DEFAULT_REGISTRY) -> Config:
    """Validate a parsed TOML mapping into a :class:`Config`. Relative paths resolve against `base_dir`.

    `registry` is the set of workflows whose ``[analysis.NAME]`` tables are read (the node's by default).
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    root = ConfigTable("", data)
    notices: list[str] = []

    n = ConfigTable("node", root.get("node", {}))
    data_dir = Path(n.string("data_dir", "var") or "var")
    if not data_dir.is_absolute():
        data_dir = base / data_dir
    log_level = (n.string("log_level", "INFO") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(n.key("log_level"), f"must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
    node = NodeConfig(
        ae_title=_ae(n, "ae_title", "LIVERNODE") or "LIVERNODE",
        host=_host(n, "host", "0.0.0.0") or "0.0.0.0",
        port=n.required_integer("port", 11112, 0, 65535),
        data_dir=data_dir,
        max_pdu_size=_max_pdu(n),
        max_associations=n.required_integer("max_associations", 10, 1, 1000),
        log_level=log_level,
        min_free_disk_mb=n.required_integer("min_free_disk_mb", 1024, 0, 10**9),
    )
    n.finish()

    s = ConfigTable("security", root.get("security", {}))
    aes = s.strings("allowed_calling_aes", ())
    for i, ae in enumerate(aes):
        if not _AE_RE.match(ae) or not ae.strip():
            raise ConfigError(f"security.allowed_calling_aes[{i}]", f"not a valid AE title: {ae!r}")
    security = SecurityConfig(allowed_calling_aes=tuple(a.strip() for a in aes), tls=_tls(s, base))
    s.finish()

    c = ConfigTable("completion", root.get("completion", {}))
    completion = CompletionConfig(stable_seconds=c.number("stable_seconds", 30.0, lo=0.0, lo_open=True, hi=86400))
    c.finish()

    analysis, legacy_fallback = _analysis(root, registry, notices)

    d = ConfigTable("destinations", root.get("destinations", {}))
    dests = []
    for name in list(d.table):
        dests.append(_destination(d, name, base, data_dir, registry.output_kinds))
    d.finish()

    o = ConfigTable("outbox", root.get("outbox", {}))
    outbox = OutboxConfig(
        max_attempts=o.required_integer("max_attempts", 10, 1, 1000),
        backoff_initial_seconds=o.number("backoff_initial_seconds", 5.0, lo=0.0, lo_open=True),
        backoff_max_seconds=o.number("backoff_max_seconds", 600.0, lo=0.0, lo_open=True),
        batch_size=o.required_integer("batch_size", 200, 1, 100000),
        parametric_map_fallback=_pm_fallback(o, legacy_fallback),
    )
    if outbox.backoff_max_seconds < outbox.backoff_initial_seconds:
        raise ConfigError("outbox.backoff_max_seconds", "must be >= outbox.backoff_initial_seconds")
    o.finish()

    h = ConfigTable("health", root.get("health", {}))
    health = HealthConfig(
        enabled=h.boolean("enabled", False),
        host=_host(h, "host", "127.0.0.1") or "127.0.0.1",
        port=h.required_integer("port", 8080, 0, 65535),
    )
    h.finish()

    rv = ConfigTable("receive", root.get("receive", {}))
    receive = ReceiveConfig(
        strict=rv.boolean("strict", False),
        negotiation_timeout_seconds=rv.number("negotiation_timeout_seconds", 5.0, lo=0.1, hi=120.0),
        network_timeout_seconds=rv.number("network_timeout_seconds", 60.0, lo=0.1, hi=3600.0),
        max_negotiating=rv.required_integer("max_negotiating", 32, 1, 10000),
        max_negotiating_per_address=rv.required_integer("max_negotiating_per_address", 8, 1, 10000),
        idle_association_seconds=rv.number("idle_association_seconds", 10.0, lo=0.1, hi=3600.0),
        fast_path=rv.boolean("fast_path", True),
        duplicates=rv.choice("duplicates", "replace", DUPLICATE_POLICIES),
    )
    rv.finish()

    classify = _classify(ConfigTable("classify", root.get("classify", {})), registry)

    dashboard = _dashboard(ConfigTable("dashboard", root.get("dashboard", {})), base, health)
    notifications = _notifications(ConfigTable("notifications", root.get("notifications", {})))

    r = ConfigTable("retention", root.get("retention", {}))
    retention = RetentionConfig(
        received_days=r.number("received_days", 0.0, lo=0.0),
        outbox_days=r.number("outbox_days", 0.0, lo=0.0),
        superseded_days=r.number("superseded_days", 0.0, lo=0.0),
        check_interval_minutes=r.number("check_interval_minutes", 60.0, lo=0.0, lo_open=True, hi=10080),
    )
    r.finish()

    root.finish()
    return Config(node=node, security=security, completion=completion, analysis=analysis,
                  destinations=tuple(dests), outbox=outbox, health=health, dashboard=dashboard,
                  notifications=notifications, retention=retention, receive=receive, classify=classify,
                  source=source, workflows=registry, notices=tuple(notices))


def _classify(c: ConfigTable, registry: Registry) -> ClassifyConfig:
    """``[classify]``: tracer_fields, and ``[classify.tracers]`` "<radiopharmaceutical>" = [patterns] (node.tracers).
    Every radiopharmaceutical must be one a registered workflow analyses; every pattern a regular expression."""
    from node.classify import known_tracers, recognises_tracer

    fields = c.strings("tracer_fields", tuple(TRACER_FIELDS))
    for i, f in enumerate(fields):
        if f not in TRACER_FIELDS:
            raise ConfigError(f"{c.key('tracer_fields')}[{i}]", f"unknown field {f!r}; use {list(TRACER_FIELDS)}")
    t = c.sub("tracers")
    rules = []
    for name in list(t.table):
        key = f'{t.prefix}."{name}"'
        patterns = t.get(name)
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise ConfigError(key, f"must be a non-empty list of patterns (regular expressions), got {patterns!r}")
        if recognises_tracer(name, registry) is None:
            raise ConfigError(key, f"no workflow analyses a radiopharmaceutical named {name!r}; name one of "
                                   f"{list(known_tracers(registry))}")
        compiled = []
        for i, p in enumerate(patterns):
            try:
                compiled.append(re.compile(p, re.IGNORECASE))
            except re.error as exc:
                raise ConfigError(f"{key}[{i}]", f"not a valid regular expression ({exc}): {p!r}") from None
        rules.append(TracerRule(name, tuple(compiled)))
    t.finish()
    c.finish()
    return ClassifyConfig(tracers=TracerRules(tuple(rules), tuple(dict.fromkeys(fields))))


def _dashboard(d: ConfigTable, base: Path, health: HealthConfig) -> DashboardConfig:
    token = d.string("token", "") or ""
    if token and len(token) < 16:
        raise ConfigError(d.key("token"), "must be at least 16 characters (e.g. `openssl rand -hex 24`)")
    username, password = d.string("username", "") or "", d.string("password", "") or ""
    if bool(username) != bool(password):
        raise ConfigError(d.key("password" if username else "username"), "basic auth needs both username and password")
    if username and (":" in username or len(password) < 12):
        raise ConfigError(d.key("password" if ":" not in username else "username"),
                          "username without ':' and a password of at least 12 characters")
    if d.has("tls"):
        t = ConfigTable(d.key("tls"), d.get("tls"))
        cert, key = _readable_file(t, "cert_file", base, True), _readable_file(t, "key_file", base, True)
        t.finish()
    else:
        d.get("tls")
        cert = key = None
    cfg = DashboardConfig(enabled=d.boolean("enabled", False), token=token, username=username, password=password,
                          cert_file=cert, key_file=key, actions=d.boolean("actions", True))
    d.finish()
    if cfg.enabled and not is_loopback(health.host):
        if not cfg.auth_required:
            raise ConfigError(d.key("token"), f"the dashboard is reachable beyond this machine (health.host = "
                                              f"{health.host!r}): set a token or username/password")
        if not cfg.tls:
            raise ConfigError(d.key("tls"), f"the dashboard is reachable beyond this machine (health.host = "
                                            f"{health.host!r}): give [dashboard.tls] cert_file and key_file")
    return cfg


def _notifications(s: ConfigTable) -> NotificationsConfig:
    hooks = []
    w = ConfigTable(s.key("webhooks"), s.get("webhooks", {}))
    for name in list(w.table):
        if not re.match(r"^[A-Za-z0-9_-]{1,32}$", name):
            raise ConfigError(w.key(name), "webhook names use letters, digits, '-' and '_' (max 32)")
        h = ConfigTable(w.key(name), w.get(name))
        url = h.string("url", None)
        if not url or not re.match(r"^https?://[^\s/]+", url):
            raise ConfigError(h.key("url"), f"must be an http:// or https:// URL, got {url!r}")
        events = h.strings("events", NOTIFY_EVENTS)
        for i, e in enumerate(events):
            if e not in NOTIFY_EVENTS:
                raise ConfigError(f"{h.key('events')}[{i}]", f"unknown event {e!r}; use {list(NOTIFY_EVENTS)}")
        hook = WebhookConfig(
            name=name, url=url, events=events, include_phi=h.boolean("include_phi", False),
            secret=h.string("secret", "") or "",
            timeout_seconds=h.number("timeout_seconds", 10.0, lo=0.0, lo_open=True, hi=300),
            max_attempts=h.required_integer("max_attempts", 8, 1, 1000),
            backoff_initial_seconds=h.number("backoff_initial_seconds", 5.0, lo=0.0, lo_open=True),
            backoff_max_seconds=h.number("backoff_max_seconds", 900.0, lo=0.0, lo_open=True))
        h.finish()
        hooks.append(hook)
    w.finish()
    cfg = NotificationsConfig(
        stalled_after_minutes=s.number("stalled_after_minutes", 120.0, lo=0.0, lo_open=True),
        destination_failing_after_minutes=s.number("destination_failing_after_minutes", 30.0, lo=0.0),
        check_interval_seconds=s.number("check_interval_seconds", 15.0, lo=0.0, lo_open=True, hi=3600),
        webhooks=tuple(hooks))
    s.finish()
    return cfg


MIN_PDU = 4096
MAX_PDU = 64 * 1024 * 1024


def _max_pdu(n: ConfigTable) -> int:
    """node.max_pdu_size. 0 used to mean "unlimited"; the node no longer offers that (one connection could claim
    gigabytes), so 0 reads as the default, and the SCP says so at start."""
    v = n.integer("max_pdu_size", NodeConfig.max_pdu_size, 0, MAX_PDU)
    if v == 0:
        return 0
    if v is None or v < MIN_PDU:
        raise ConfigError(n.key("max_pdu_size"), f"must be between {MIN_PDU} and {MAX_PDU} bytes, got {v}")
    return v


def _analysis(root: ConfigTable, registry: Registry, notices: list[str]
              ) -> tuple[AnalysisConfig, tuple[str, str] | None]:
    """``[analysis]``: the shared keys, then each workflow's ``[analysis.NAME]`` table, parsed by the workflow.

    Flat keys of the old layout (``[analysis] fls_threshold = ...``) are still accepted: each is handed to the
    workflow that took it over, under its new name, with a deprecation notice; errors name the key as written.
    Returns the settings and the old ``parametric_map_fallback`` (value, key), which moved to ``[outbox]``.
    """
    a = ConfigTable("analysis", root.get("analysis", {}))
    common = CommonSettings(liver_roi_names=a.strings("liver_roi_names", CommonSettings.liver_roi_names))
    legacy_fallback = None
    if a.has("parametric_map_fallback"):
        legacy_fallback = (a.get("parametric_map_fallback"), a.key("parametric_map_fallback"))
        notices.append("config: [analysis] parametric_map_fallback is deprecated: it is a delivery setting, "
                       "write it in [outbox] (or per destination)")
    settings: dict[str, Any] = {}
    for wf in registry:
        table = a.get(wf.name, {})
        if not isinstance(table, Mapping):
            raise ConfigError(a.key(wf.name), "must be a table")
        moved: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for old, new in wf.legacy_keys.items():
            if not a.has(old):
                continue
            if new in table:
                raise ConfigError(a.key(old), f"given twice: here and as analysis.{wf.name}.{new}; keep the latter")
            moved[new], origins[new] = a.get(old), a.key(old)
            notices.append(f"config: [analysis] {old} is deprecated: write it as [analysis.{wf.name}] {new}")
        settings[wf.name] = wf.parse_settings(ConfigTable(a.key(wf.name), {**table, **moved}, origins), common)
    a.finish()
    return AnalysisConfig(common=common, workflows=settings), legacy_fallback


def _pm_fallback(outbox: ConfigTable, legacy: tuple[str, str] | None) -> str:
    if legacy is not None:
        value, key = legacy
        if outbox.has("parametric_map_fallback"):
            raise ConfigError(key, "given twice: here and as outbox.parametric_map_fallback; keep the latter")
        if value not in PM_FALLBACKS:
            raise ConfigError(key, f"must be 'secondary-capture' or 'none', got {value!r}")
        return str(value)
    value = outbox.required_string("parametric_map_fallback", "secondary-capture")
    if value not in PM_FALLBACKS:
        raise ConfigError(outbox.key("parametric_map_fallback"),
                          f"must be 'secondary-capture' or 'none', got {value!r}")
    return str(value)


def _destination(parent: ConfigTable, name: str, base: Path, data_dir: Path,
                 output_kinds: tuple[str, ...]) -> DestinationConfig:
    if not re.match(r"^[A-Za-z0-9_-]{1,32}$", name):
        raise ConfigError(parent.key(name), "destination names use letters, digits, '-' and '_' (max 32)")
    sec = ConfigTable(parent.key(name), parent.get(name))
    outputs = sec.strings("outputs", ())
    if not outputs:
        raise ConfigError(sec.key("outputs"), f"must list at least one of {list(output_kinds)}")
    for i, out in enumerate(outputs):
        if out not in output_kinds:
            raise ConfigError(f"{sec.key('outputs')}[{i}]", f"unknown output {out!r}; use {list(output_kinds)}")
    folder = sec.string("folder", None)
    if folder is not None:
        for k in ("ae_title", "host", "port", "tls"):
            if sec.has(k):
                raise ConfigError(sec.key(k), "a folder destination takes no network settings")
        p = Path(folder)
        if not p.is_absolute():
            p = data_dir / p  # folder destinations live under data_dir unless absolute
        sec.finish()
        return DestinationConfig(name=name, outputs=outputs, folder=p)
    for k in ("ae_title", "host", "port"):
        if not sec.has(k):
            raise ConfigError(sec.key(k), "is required for a DICOM destination (or give 'folder')")
    dest = DestinationConfig(
        name=name,
        outputs=outputs,
        ae_title=_ae(sec, "ae_title", None),
        host=_host(sec, "host", None),
        port=sec.integer("port", None, 1, 65535),
        tls=_tls(sec, base),
        parametric_map_fallback=(sec.choice("parametric_map_fallback", "secondary-capture", PM_FALLBACKS)
                                 if sec.has("parametric_map_fallback") else sec.get("parametric_map_fallback")),
    )
    sec.finish()
    return dest


def load_config(path: str | Path, registry: Registry = DEFAULT_REGISTRY) -> Config:
    """Read and validate a config file. Relative paths in it resolve against the file's folder."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError("(file)", f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("(file)", f"{p} is not valid TOML: {exc}") from None
    return parse_config(data, base_dir=p.resolve().parent, source=p, registry=registry)
