"""`netvigil run`: the live sensor, its rules, alerts and recording, until stopped."""
from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rules import DEFAULT_RULES_DIR
from rules.command_help import add_command
from sensor import __version__, logging_setup
from sensor.agent import Sensor, SensorOptions
from sensor.agent_parts import AgentParts
from sensor.agent_services import AgentServices
from sensor.config import AgentConfig, load_config
from sensor.event_hub import EventHub, chain_consumers
from sensor.event_output import EventPrinter
from sensor.health import Heartbeat
from sensor.live_view import view_for_run
from sensor.pipeline import Pipeline
from sensor.reload import ReloadSource
from sensor.terminal import color_of, console

DEFAULT_SPOOL_DIR = "/var/lib/netvigil/spool"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `run` to the top-level parser."""
    p = add_command(
        sub, "run", help="run the sensor: stream alerts (and events) until stopped",
        description="Load the BPF programs, evaluate the rules on every event, send alerts to the "
                    "configured sinks, enforce deny rules and record everything, until Ctrl-C, "
                    "SIGTERM or --duration. SIGHUP (or a change of the config or rules files) "
                    "reloads the rules. Needs root (`netvigil doctor` says what else)."
                    "\n\nOn a terminal it shows a live view: events/s, lost events, alerts by "
                    "priority, sink health, then the latest alerts (and events with --events). "
                    "Piped, or with --json, it writes JSON lines: Falco's alert JSON, and the "
                    "events with --events.",
        examples=[
            "netvigil run                                   # live view; config from /etc/netvigil",
            "netvigil run --config netvigil.yaml --rules rules/default --rules local.yaml",
            "netvigil run --events --json | jq 'select(.[\"evt.type\"] == \"connect\")'",
            "netvigil run --no-record --no-enforce --duration 60",
            "netvigil run --alert-set stdout.format=json --http 0.0.0.0:8765",
            "netvigil run --cleanup                         # remove pinned maps and programs",
        ])
    p.add_argument("--config", metavar="FILE", help="YAML config file (default: $NETVIGIL_CONFIG, else "
                   "/etc/netvigil/netvigil.yaml if present)")
    p.add_argument("--rules", metavar="PATH", action="append", default=None,
                   help="rule file or directory (repeatable; default: the shipped library)")
    p.add_argument("--no-rules", action="store_true", help="evaluate no rules (events only)")
    p.add_argument("--events", action="store_true", help="print every event, not only alerts")
    p.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    rec = p.add_mutually_exclusive_group()
    rec.add_argument("--record", metavar="DIR", help="record everything seen into DIR")
    rec.add_argument("--no-record", action="store_true", help="do not record")
    p.add_argument("--alert-set", metavar="SINK.KEY=VALUE", action="append", default=[],
                   help="override an alerts setting for this run (e.g. stdout.format=json)")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after SECONDS")
    p.add_argument("--no-enforce", action="store_true",
                   help="do not load the enforcement datapath (detection only)")
    p.add_argument("--cleanup", action="store_true",
                   help="remove every pinned map and attached enforcement program, then exit")
    http = p.add_mutually_exclusive_group()
    http.add_argument("--http", metavar="ADDR:PORT",
                      help="serve /healthz /readyz /metrics here (default: config http:, 127.0.0.1:8765)")
    http.add_argument("--no-http", action="store_true", help="no HTTP endpoint")
    api = p.add_mutually_exclusive_group()
    api.add_argument("--api-socket", metavar="PATH",
                     help="local API socket for observe/status (default: config api.socket, "
                          "/run/netvigil/netvigil.sock)")
    api.add_argument("--no-api", action="store_true", help="no local API socket")
    logging_setup.add_arguments(p, inherited=True)
    p.set_defaults(func=run)


class _Stop:
    """Set by SIGTERM/SIGINT; the poll loop checks it between polls."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, _signum: int, _frame: object) -> None:
        self.requested = True


def _load_ruleset(args: argparse.Namespace, cfg: AgentConfig) -> Any | None:
    if args.no_rules:
        return None
    from rules.loader import load_rules  # noqa: PLC0415

    paths = args.rules or cfg.rules_paths or [str(DEFAULT_RULES_DIR)]
    return load_rules(paths, skip_unsupported=cfg.skip_unsupported,
                      enforce_mode_override=cfg.enforce_mode)


def _watched_paths(args: argparse.Namespace, cfg: AgentConfig) -> list[str]:
    """What a change of reloads: the config file and the rules paths."""
    return ([args.config] if args.config else []) + (args.rules or cfg.rules_paths or [str(DEFAULT_RULES_DIR)])


def _parse_alerts(cfg: AgentConfig, args: argparse.Namespace, as_json: bool) -> Any:
    from alerts import parse_alerts_config  # noqa: PLC0415

    return parse_alerts_config(_alerts_section(cfg, args.alert_set, as_json), cfg.source)


def _start_router(alerts_cfg: Any) -> Any:
    """A started alert router for these settings (its spools opened)."""
    from alerts import AlertRouter  # noqa: PLC0415

    router = AlertRouter(alerts_cfg, Path(alerts_cfg.spool_dir or DEFAULT_SPOOL_DIR))
    router.start()
    return router


def _record_dir(args: argparse.Namespace, cfg: AgentConfig) -> str | None:
    if args.no_record:
        return None
    return args.record or cfg.record_dir


def _k8s_enricher(cfg: AgentConfig, k8s: Any = None) -> Any:
    """Container/pod identity for events: runtime bundles (always), the API when available."""
    from sensor.k8s.enrich import K8sEnricher  # noqa: PLC0415
    from sensor.k8s.runtime import RuntimeMetadata  # noqa: PLC0415

    kc = cfg.kubernetes
    runtime = RuntimeMetadata(kc.runtime_roots())
    if k8s is not None and k8s.available:
        return K8sEnricher(runtime, k8s.pods, k8s.peers, api_expected=k8s.api_expected,
                           hold_s=kc.pod_metadata_wait_s)
    return K8sEnricher(runtime)


def _status(sensor: Sensor, pipeline: Pipeline, router: Any | None,
            enforcement: Any | None = None) -> str:
    st = sensor.stats()
    line = (f"events={st.events} lost={st.lost} processes={st.processes} "
            f"alerts={pipeline.alerts} decode_errors={st.decode_errors}")
    if st.repeats_folded:
        line += f" repeats_folded={st.repeats_folded}"
    if enforcement is not None:
        q = enforcement.queue.stats()
        line += f" enforce_queued={q['submitted']} enforce_dropped={q['dropped']}"
    if router is not None:
        from alerts import format_status  # noqa: PLC0415

        line += " " + format_status(router.stats())
    return line


def _alerts_section(cfg: AgentConfig, overrides: list[str], as_json: bool) -> dict[str, Any]:
    """The `alerts:` section with per-run overrides; when no sink is set, alerts go to stdout
    as JSON lines (on a terminal the live view shows them instead)."""
    from alerts import apply_overrides, with_default_sink  # noqa: PLC0415

    section = apply_overrides(cfg.alerts, overrides) if overrides else cfg.alerts
    return with_default_sink(section, json_lines=True) if as_json else section


def run(args: argparse.Namespace) -> int:
    """Run the sensor until SIGINT/SIGTERM or --duration; returns the exit code."""
    cfg = load_config(args.config)
    logging_setup.configure_from_args(args, cfg.log.format, cfg.log.level)
    if args.cleanup:
        from sensor.enforcement.agent import Enforcement  # noqa: PLC0415
        from sensor.enforcement.config import parse_enforce_config  # noqa: PLC0415

        removed = Enforcement(parse_enforce_config(cfg.enforce, cfg.source)).cleanup()
        print(f"netvigil: removed {len(removed)} pinned or attached enforcement object(s)", file=sys.stderr)
        return 0
    ruleset = _load_ruleset(args, cfg)
    as_json = args.json or not sys.stdout.isatty()
    hostname = socket.gethostname()
    stop = _Stop()
    router = None
    with ExitStack() as stack:
        if ruleset is not None:
            from alerts import resolve_hostname  # noqa: PLC0415

            alerts_cfg = _parse_alerts(cfg, args, as_json)
            hostname = resolve_hostname(alerts_cfg)
            router = _start_router(alerts_cfg)
            stack.callback(router.stop, 5.0)
        recorder = None
        record_dir = _record_dir(args, cfg)
        if record_dir:
            from sensor.recording.recorder import Recorder  # noqa: PLC0415
            from sensor.procfs import read_boot_id  # noqa: PLC0415

            recorder = Recorder(Path(record_dir), host=hostname, boot_id=read_boot_id(),
                                version=__version__, **cfg.record.recorder_kwargs())
            stack.callback(recorder.close)
        enforcement = None
        if ruleset is not None and not args.no_enforce:
            from sensor.enforcement.agent import Enforcement  # noqa: PLC0415
            from sensor.enforcement.config import parse_enforce_config  # noqa: PLC0415

            enforce_cfg = parse_enforce_config(cfg.enforce, cfg.source)
            if enforce_cfg.enabled:
                enforcement = Enforcement(enforce_cfg)
                enforcement.start(ruleset.static_enforcements(),
                                  known_rules=[r.name for r in ruleset.rules])
                stack.callback(enforcement.stop)
        from sensor.k8s.watcher import K8sWatcher  # noqa: PLC0415

        k8s = K8sWatcher(cfg.kubernetes)  # k8s.pods / k8s.peers: lock-free lookups for enrichment
        k8s_started = k8s.start()
        if k8s_started:
            stack.callback(k8s.stop)
        view = view_for_run(as_json=as_json, show_events=args.events, color=color_of(args),
                            stats=lambda: sensor.stats(), title=f"netvigil {__version__} on {hostname}",
                            sinks=lambda: pipeline.router.stats() if pipeline.router else {})
        printer = EventPrinter(sys.stdout, as_json) if args.events and as_json else None
        enricher = _k8s_enricher(cfg, k8s)
        hub = EventHub(cfg.api.history)
        pipeline = Pipeline(hostname=hostname, ruleset=ruleset, router=router, recorder=recorder,
                            on_event=chain_consumers(printer, view and view.on_event, hub.publish),
                            k8s=enricher, enforcement=enforcement,
                            on_alert=chain_consumers(view and view.on_alert, hub.alert))
        sensor = Sensor(pipeline, SensorOptions(ringbuf_pages=cfg.ringbuf_pages, hooks=cfg.hooks,
                                                   fold_repeats_s=cfg.fold_repeats_s), enricher)
        if enforcement is not None:
            from sensor.enforcement.pod_scopes import feed  # noqa: PLC0415

            feed(enforcement.pod_scopes, enricher, k8s.pods if k8s.available else None)
        if recorder is not None:
            sensor.table.on_add = recorder.process
        parts = AgentParts(hub, Heartbeat(cfg.http.heartbeat_timeout_s), sensor=sensor, pipeline=pipeline,
                           enforcement=enforcement, k8s_watcher=k8s if k8s_started else None,
                           enricher=enricher, config_source=cfg.source)
        from sensor.cli import USER_ERRORS  # noqa: PLC0415 - the one list of user mistakes

        reload_source = None if ruleset is None else ReloadSource(
            load_config=lambda: load_config(args.config), load_ruleset=lambda c: _load_ruleset(args, c),
            parse_alerts=lambda c: _parse_alerts(c, args, as_json), build_router=_start_router,
            watched_paths=lambda c: _watched_paths(args, c), user_errors=USER_ERRORS)
        services = stack.enter_context(AgentServices(parts, cfg, args, reload_source))
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, services.request_reload)
        stack.callback(lambda: [signal.signal(s, h) for s, h in previous.items()])
        sensor.start()
        services.sensor_started()
        stack.callback(sensor.close)
        if recorder is not None:
            for record in sensor.table:
                recorder.process(record)
        if enforcement is not None:
            enforcement.open_verdicts(lambda verdict: pipeline(sensor.enrich(verdict)))
        program = sensor.program
        hooks = f", network hooks {program.hooks.hooks}" + (
            "" if program.packet_hook else " (AF_PACKET sockets by a /proc scan: see netvigil doctor)") + (
            f", repeats folded every {cfg.fold_repeats_s:g}s" if cfg.fold_repeats_s else "")
        logging_setup.notice(f"netvigil {__version__}: sensor running{hooks}"
                             f"{'' if ruleset is None else f', {len(ruleset.rules)} rules'}"
                             f"{'' if not record_dir else f', recording to {record_dir}'}; Ctrl-C stops")
        logging_setup.notice(f"netvigil: kubernetes: {k8s.status}")
        if view is not None:
            stack.enter_context(view)
        deadline = time.monotonic() + args.duration if args.duration else None
        last_status, lost_seen = time.monotonic(), 0
        while not stop.requested and (deadline is None or time.monotonic() < deadline):
            sensor.poll(100)
            parts.heartbeat.beat()
            pipeline.tick()
            hub.flush()
            if enforcement is not None:
                enforcement.poll(0)
            sys.stdout.flush()
            if view is not None:
                view.tick()
            now = time.monotonic()
            if now - last_status >= 1.0 and view is None:
                last_status = now
                lost = sensor.stats().lost
                if lost > lost_seen:
                    logging_setup.notice(f"netvigil: warning: {lost - lost_seen} events lost (ring buffer full)",
                                         level=logging.WARNING)
                    lost_seen = lost
        sensor.drain()
        pipeline.flush()
        hub.flush()
        if view is not None:
            view.close()   # the summary goes below the last figures, not through the view
        logging_setup.notice("netvigil: stopped: " + _status(sensor, pipeline, None, enforcement))
        router = pipeline.router
    if router is not None:
        from alerts import stats_view  # noqa: PLC0415

        console(sys.stderr, color_of(args)).print(stats_view(router.stats(), router.noise_stats()))
    return 0
