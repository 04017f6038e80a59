"""Node configuration: `config.toml` read with tomllib into frozen dataclasses.

Validation happens once, at start-up. Every problem raises :class:`ConfigError` whose message names the
offending key (e.g. ``destinations.pacs.port``), so an administrator can fix the file without reading code.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "ConfigError",
    "NodeConfig",
    "SecurityConfig",
    "TlsConfig",
    "CompletionConfig",
    "AnalysisConfig",
    "InputRoiOverride",
    "DestinationConfig",
    "OutboxConfig",
    "HealthConfig",
    "DashboardConfig",
    "WebhookConfig",
    "NotificationsConfig",
    "RetentionConfig",
    "Config",
    "NOTIFY_EVENTS",
    "is_loopback",
    "OUTPUT_KINDS",
    "load_config",
    "parse_config",
]

#: Output kinds a destination may take (routing keys).
OUTPUT_KINDS = ("parametric-map", "secondary-capture", "report", "rtstruct")
PERFUSION_METHODS = ("max-slope", "discm")
#: Events a webhook may subscribe to (node/notifications.py).
NOTIFY_EVENTS = ("case-done", "case-failed", "case-held", "case-stalled", "destination-failing",
                 "destination-recovered", "disk-low")

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: 16 chars, no backslash/control


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config key '{key}': {problem}")
        self.key = key


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
    max_pdu_size: int = 0  # 0 = unlimited: fewer, larger P-DATA PDUs on the hot path
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
class InputRoiOverride:
    """A sphere in patient coordinates (mm) that replaces automatic input-curve detection."""

    center_mm: tuple[float, float, float]
    radius_mm: float


@dataclass(frozen=True)
class AnalysisConfig:
    fls_threshold: float = 0.60
    ptv_margin_mm: float = 5.0
    perfusion_methods: tuple[str, ...] = PERFUSION_METHODS
    #: a perfusion region value whose 95 % interval (+-1.96 SD of image noise and model fit) spans more than this
    #: fraction of the value is reported as not measurable
    perfusion_tolerance: float = 0.15
    liver_roi_names: tuple[str, ...] = ("Liver", "LIVER", "liver", "Leber", "Whole Liver", "Foie", "Higado")
    aorta: InputRoiOverride | None = None
    portal_vein: InputRoiOverride | None = None
    spleen: InputRoiOverride | None = None
    normal_liver_dose_gy: float = 70.0
    lung_dose_limit_gy: float = 30.0
    lung_shunt_fraction: float | None = None  # from planar imaging, used when the MAA SPECT misses the lungs
    parametric_map_fallback: str = "secondary-capture"  # or "none"


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

    @property
    def kind(self) -> str:
        return "folder" if self.folder is not None else "dicom"


@dataclass(frozen=True)
class OutboxConfig:
    max_attempts: int = 10
    backoff_initial_seconds: float = 5.0
    backoff_max_seconds: float = 600.0
    batch_size: int = 200


@dataclass(frozen=True)
class HealthConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8080


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
    source: Path | None = None  # the file it came from, for messages

    def destinations_for(self, output_kind: str) -> tuple[DestinationConfig, ...]:
        return tuple(d for d in self.destinations if output_kind in d.outputs)

    def unrouted_outputs(self) -> tuple[str, ...]:
        """Output kinds no destination takes (they would stay in the outbox folder only)."""
        return tuple(k for k in OUTPUT_KINDS if not self.destinations_for(k))

    @property
    def http_enabled(self) -> bool:
        """The node's HTTP server runs for health and/or the dashboard (/metrics is served on it too)."""
        return self.health.enabled or self.dashboard.enabled

    def with_overrides(self, **sections: Any) -> "Config":
        """A copy with whole sections replaced (used by tests and the demo)."""
        return dataclasses.replace(self, **sections)


# ---------------------------------------------------------------- validation helpers
class _Section:
    """Reads one TOML table, remembering which keys were used so unknown ones are reported."""

    def __init__(self, prefix: str, table: Any) -> None:
        if not isinstance(table, Mapping):
            raise ConfigError(prefix, "must be a table")
        self.prefix = prefix
        self.table = dict(table)
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def get(self, name: str, default: Any = None) -> Any:
        self.used.add(name)
        return self.table.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.table

    def string(self, name: str, default: str | None) -> str | None:
        v = self.get(name, default)
        if v is not None and not isinstance(v, str):
            raise ConfigError(self.key(name), f"must be a string, got {v!r}")
        return v

    def integer(self, name: str, default: int | None, lo: int | None = None, hi: int | None = None) -> int | None:
        v = self.get(name, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(self.key(name), f"must be an integer, got {v!r}")
        if lo is not None and v < lo or hi is not None and v > hi:
            raise ConfigError(self.key(name), f"must be between {lo} and {hi}, got {v}")
        return v

    def number(self, name: str, default: float, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False) -> float:
        v = self.get(name, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(self.key(name), f"must be a number, got {v!r}")
        v = float(v)
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise ConfigError(self.key(name), f"must be {'>' if lo_open else '>='} {lo}, got {v}")
        if hi is not None and v > hi:
            raise ConfigError(self.key(name), f"must be <= {hi}, got {v}")
        return v

    def boolean(self, name: str, default: bool) -> bool:
        v = self.get(name, default)
        if not isinstance(v, bool):
            raise ConfigError(self.key(name), f"must be true or false, got {v!r}")
        return v

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        v = self.get(name, list(default))
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(self.key(name), f"must be a list of strings, got {v!r}")
        return tuple(v)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise ConfigError(self.key(unknown[0]), "unknown key (check spelling; see the documented config.toml)")


def _ae(sec: _Section, name: str, default: str | None) -> str | None:
    v = sec.string(name, default)
    if v is not None and (not _AE_RE.match(v) or not v.strip()):
        raise ConfigError(sec.key(name), f"not a valid AE title (1-16 printable characters, no backslash): {v!r}")
    return v.strip() if v is not None else None


def _host(sec: _Section, name: str, default: str | None) -> str | None:
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


def _readable_file(sec: _Section, name: str, base: Path, required: bool) -> Path | None:
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


def _tls(parent: _Section, base: Path) -> TlsConfig | None:
    if not parent.has("tls"):
        parent.get("tls")
        return None
    sec = _Section(parent.key("tls"), parent.get("tls"))
    tls = TlsConfig(
        cert_file=_readable_file(sec, "cert_file", base, True),  # type: ignore[arg-type]
        key_file=_readable_file(sec, "key_file", base, True),  # type: ignore[arg-type]
        ca_file=_readable_file(sec, "ca_file", base, False),
        require_client_cert=sec.boolean("require_client_cert", True),
    )
    sec.finish()
    if tls.require_client_cert and tls.ca_file is None and parent.prefix == "security":
        raise ConfigError(sec.key("ca_file"), "is required when require_client_cert = true")
    return tls


def _roi_override(sec: _Section, name: str) -> InputRoiOverride | None:
    if not sec.has(name):
        sec.get(name)
        return None
    sub = _Section(sec.key(name), sec.get(name))
    c = sub.get("center_mm")
    if not isinstance(c, list) or len(c) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                         for x in c):
        raise ConfigError(sub.key("center_mm"), f"must be [x, y, z] in mm, got {c!r}")
    r = sub.number("radius_mm", 5.0, lo=0.0, lo_open=True)
    sub.finish()
    return InputRoiOverride(center_mm=(float(c[0]), float(c[1]), float(c[2])), radius_mm=r)


def parse_config(data: Mapping[str, Any], base_dir: Path | None = None, source: Path | None = None) -> Config:
    """Validate a parsed TOML mapping into a :class:`Config`. Relative paths resolve against `base_dir`."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    root = _Section("", data)

    n = _Section("node", root.get("node", {}))
    data_dir = Path(n.string("data_dir", "var") or "var")
    if not data_dir.is_absolute():
        data_dir = base / data_dir
    log_level = (n.string("log_level", "INFO") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(n.key("log_level"), f"must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
    node = NodeConfig(
        ae_title=_ae(n, "ae_title", "LIVERNODE"),  # type: ignore[arg-type]
        host=_host(n, "host", "0.0.0.0"),  # type: ignore[arg-type]
        port=n.integer("port", 11112, 0, 65535),  # type: ignore[arg-type]
        data_dir=data_dir,
        max_pdu_size=n.integer("max_pdu_size", 0, 0, 2**31 - 1),  # type: ignore[arg-type]
        max_associations=n.integer("max_associations", 10, 1, 1000),  # type: ignore[arg-type]
        log_level=log_level,
        min_free_disk_mb=n.integer("min_free_disk_mb", 1024, 0, 10**9),  # type: ignore[arg-type]
    )
    n.finish()

    s = _Section("security", root.get("security", {}))
    aes = s.strings("allowed_calling_aes", ())
    for i, ae in enumerate(aes):
        if not _AE_RE.match(ae) or not ae.strip():
            raise ConfigError(f"security.allowed_calling_aes[{i}]", f"not a valid AE title: {ae!r}")
    security = SecurityConfig(allowed_calling_aes=tuple(a.strip() for a in aes), tls=_tls(s, base))
    s.finish()

    c = _Section("completion", root.get("completion", {}))
    completion = CompletionConfig(stable_seconds=c.number("stable_seconds", 30.0, lo=0.0, lo_open=True, hi=86400))
    c.finish()

    a = _Section("analysis", root.get("analysis", {}))
    methods = a.strings("perfusion_methods", PERFUSION_METHODS)
    for i, m in enumerate(methods):
        if m not in PERFUSION_METHODS:
            raise ConfigError(f"analysis.perfusion_methods[{i}]", f"unknown method {m!r}; use {list(PERFUSION_METHODS)}")
    fallback = a.string("parametric_map_fallback", "secondary-capture")
    if fallback not in ("secondary-capture", "none"):
        raise ConfigError(a.key("parametric_map_fallback"), f"must be 'secondary-capture' or 'none', got {fallback!r}")
    analysis = AnalysisConfig(
        fls_threshold=a.number("fls_threshold", 0.60, lo=0.0, lo_open=True, hi=1.0),
        ptv_margin_mm=a.number("ptv_margin_mm", 5.0, lo=0.0, hi=50.0),
        perfusion_methods=methods,
        perfusion_tolerance=a.number("perfusion_tolerance", 0.15, lo=0.0, lo_open=True, hi=1.0),
        liver_roi_names=a.strings("liver_roi_names", AnalysisConfig.liver_roi_names),
        aorta=_roi_override(a, "aorta"),
        portal_vein=_roi_override(a, "portal_vein"),
        spleen=_roi_override(a, "spleen"),
        normal_liver_dose_gy=a.number("normal_liver_dose_gy", 70.0, lo=0.0, lo_open=True, hi=200.0),
        lung_dose_limit_gy=a.number("lung_dose_limit_gy", 30.0, lo=0.0, lo_open=True, hi=200.0),
        lung_shunt_fraction=(a.number("lung_shunt_fraction", 0.0, lo=0.0, hi=0.99)
                             if a.has("lung_shunt_fraction") else a.get("lung_shunt_fraction")),
        parametric_map_fallback=fallback,  # type: ignore[arg-type]
    )
    a.finish()

    d = _Section("destinations", root.get("destinations", {}))
    dests = []
    for name in list(d.table):
        dests.append(_destination(d, name, base, data_dir))
    d.finish()

    o = _Section("outbox", root.get("outbox", {}))
    outbox = OutboxConfig(
        max_attempts=o.integer("max_attempts", 10, 1, 1000),  # type: ignore[arg-type]
        backoff_initial_seconds=o.number("backoff_initial_seconds", 5.0, lo=0.0, lo_open=True),
        backoff_max_seconds=o.number("backoff_max_seconds", 600.0, lo=0.0, lo_open=True),
        batch_size=o.integer("batch_size", 200, 1, 100000),  # type: ignore[arg-type]
    )
    if outbox.backoff_max_seconds < outbox.backoff_initial_seconds:
        raise ConfigError("outbox.backoff_max_seconds", "must be >= outbox.backoff_initial_seconds")
    o.finish()

    h = _Section("health", root.get("health", {}))
    health = HealthConfig(
        enabled=h.boolean("enabled", False),
        host=_host(h, "host", "127.0.0.1"),  # type: ignore[arg-type]
        port=h.integer("port", 8080, 0, 65535),  # type: ignore[arg-type]
    )
    h.finish()

    dashboard = _dashboard(_Section("dashboard", root.get("dashboard", {})), base, health)
    notifications = _notifications(_Section("notifications", root.get("notifications", {})))

    r = _Section("retention", root.get("retention", {}))
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
                  notifications=notifications, retention=retention, source=source)


def _dashboard(d: _Section, base: Path, health: HealthConfig) -> DashboardConfig:
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
        t = _Section(d.key("tls"), d.get("tls"))
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


def _notifications(s: _Section) -> NotificationsConfig:
    hooks = []
    w = _Section(s.key("webhooks"), s.get("webhooks", {}))
    for name in list(w.table):
        if not re.match(r"^[A-Za-z0-9_-]{1,32}$", name):
            raise ConfigError(w.key(name), "webhook names use letters, digits, '-' and '_' (max 32)")
        h = _Section(w.key(name), w.get(name))
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
            max_attempts=h.integer("max_attempts", 8, 1, 1000),  # type: ignore[arg-type]
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


def _destination(parent: _Section, name: str, base: Path, data_dir: Path) -> DestinationConfig:
    if not re.match(r"^[A-Za-z0-9_-]{1,32}$", name):
        raise ConfigError(parent.key(name), "destination names use letters, digits, '-' and '_' (max 32)")
    sec = _Section(parent.key(name), parent.get(name))
    outputs = sec.strings("outputs", ())
    if not outputs:
        raise ConfigError(sec.key("outputs"), f"must list at least one of {list(OUTPUT_KINDS)}")
    for i, out in enumerate(outputs):
        if out not in OUTPUT_KINDS:
            raise ConfigError(f"{sec.key('outputs')}[{i}]", f"unknown output {out!r}; use {list(OUTPUT_KINDS)}")
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
    )
    sec.finish()
    return dest


def load_config(path: str | Path) -> Config:
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
    return parse_config(data, base_dir=p.resolve().parent, source=p)
