"""The composition root: config, engine, plugins, API app, recorders, server and workers."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bottle
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from pbxcontrol import config as config_mod
from pbxcontrol import logs, plugin
from pbxcontrol.auth import login as user_login
from pbxcontrol.auth import tickets as stream_tickets
from pbxcontrol.auth.authenticator import Authenticator
from pbxcontrol.auth.keys import key_reader
from pbxcontrol.auth.proxy import ClientAddress
from pbxcontrol.auth.throttle import LoginThrottle
from pbxcontrol.auth.tokens import TokenSigner
from pbxcontrol.config import Config
from pbxcontrol.database import StartupError, database_engine, open_database, ready_schema
from pbxcontrol.db.commits import CommitSignal
from pbxcontrol.db.engine import make_sessionmaker
from pbxcontrol.db.intents import Control, Doorbell
from pbxcontrol.db.journal import Follower, Journal
from pbxcontrol.db.outage import describe, outage_in
from pbxcontrol.db.unrecorded import Watch
from pbxcontrol.http.api import JsonApi, build_app
from pbxcontrol.service import lifecycle, notify, starting, supervisor
from pbxcontrol.service import server as http_server
from pbxcontrol.streams.slots import PersonSlots
from pbxcontrol.streams.stream import StreamApi

if TYPE_CHECKING:  # the recorder is imported when recorders are built (build_recorders)
    from pbxcontrol.http.metrics import Metrics  # after the multiprocess directory is set
    from pbxcontrol.recorder.machine import MachineRecorder

log = logging.getLogger("pbxcontrol")
#: Seconds per ARI request of call control (connect, then read): the answer is due 2 s after
#: the request arrived (SPEC §11.2), so a hung Asterisk must be given up on before that.
CONTROL_TIMEOUT = 1.5


@dataclass
class Runtime:
    """What one process runs: built by `build`, closed by `close`."""

    config: Config
    engine: Engine
    sessions: sessionmaker[Session]
    api: JsonApi | None = None
    app: bottle.Bottle | None = None
    streams: StreamApi | None = None  # live streams under /api/stream/
    metrics: Metrics | None = None  # this process's figures, /health and /metrics
    recorders: list[MachineRecorder] = field(default_factory=list)
    #: The recorders' commits; under `serve`, the stream hub of this process subscribes.
    commits: CommitSignal = field(default_factory=CommitSignal)
    #: Wakes this process's intent workers when its API wrote an intent (SPEC §11.2).
    bell: Doorbell = field(default_factory=Doorbell)

    def close(self) -> None:
        for recorder in self.recorders:
            recorder.stop()
        self.engine.dispose()


def configure(path: str | None, log_level: str | None = None) -> Config:
    """Read the config (`path`, else $PBXCONTROL_CONFIG) and set up logging from it."""
    config = config_mod.load(config_mod.resolve_path(path), known_plugins=plugin.available())
    if log_level and log_level.upper() not in config_mod.LOG_LEVELS:
        raise StartupError(
            f"--log-level: {log_level!r} is not one of {', '.join(config_mod.LOG_LEVELS)}"
        )
    logs.setup(log_level.upper() if log_level else config.log_level, config.log_format)
    for problem in config_mod.readable_secrets(config.path, config.database_url):
        log.warning("%s", problem)  # the line `check-config` prints
    return config


def build(config: Config, *, http: bool = True, record: bool = True) -> Runtime:
    """Everything but the server: the database, the API app with its plugins and streams, the
    metrics, the recorders; each object built with its collaborators."""
    engine, sessions = open_database(config)
    try:
        return assemble(config, engine, sessions, http=http, record=record)
    except BaseException:
        engine.dispose()
        raise


def assemble(
    config: Config,
    engine: Engine,
    sessions: sessionmaker[Session],
    *,
    http: bool = True,
    record: bool = True,
) -> Runtime:
    """The runtime on a database that answers (its plugins' start-up checks read it)."""
    commits, bell = CommitSignal(), Doorbell()
    parts: dict[str, Any] = {}
    if http:
        parts = _build_http(config, engine, bell)
    recorders = build_recorders(config, sessions, commits, bell) if record else []
    return Runtime(
        config, engine, sessions, recorders=recorders, commits=commits, bell=bell, **parts
    )


def start(
    config: Config, sock: socket.socket | None, stop: threading.Event, *, http: bool, record: bool
) -> Runtime | None:
    """The runtime, once the database answers (SPEC §12): until then one log line per try,
    the pause growing to 6 s (starting.PAUSES), and HTTP 503 on `sock`
    (starting.WaitingServer). None when stopped meanwhile."""
    engine = database_engine(config)
    waiting: starting.WaitingServer | None = None
    tries = 0
    try:
        for pause in starting.pauses():
            tries += 1
            try:
                ready_schema(engine, waited=tries > 1)
                built = assemble(
                    config, engine, make_sessionmaker(engine), http=http, record=record
                )
                if tries > 1:
                    log.info("database %s answers (after %d tries)", starting.masked(engine), tries)
                return built
            except Exception as exc:
                if (outage := outage_in(exc)) is None or isinstance(exc, StartupError):
                    raise
                log.warning(
                    "database %s unreachable (try %d: %s); next try in %.1f s",
                    *(starting.masked(engine), tries, describe(outage), pause),
                )
            if waiting is None and sock is not None:
                waiting = starting.WaitingServer(sock)
            notify.notify(f"READY=1\nSTATUS=waiting for the database (try {tries})")
            if not starting.sleep(stop, pause):
                engine.dispose()
                return None
    except BaseException:
        engine.dispose()
        raise
    finally:
        if waiting is not None:
            waiting.close()
    raise AssertionError("unreachable")  # pauses() never ends


def _build_http(config: Config, engine: Engine, bell: Doorbell) -> dict[str, Any]:
    # Imported here: after `serve` has set the metrics' multiprocess directory.
    from pbxcontrol.http import metrics as metrics_mod

    ids, takeover = [m.id for m in config.machines], config.takeover_seconds
    metrics = metrics_mod.Metrics(engine, ids, takeover)
    followers: list[Follower] = []
    api = build_api(config, engine, observe=metrics.observe, followers=followers, bell=bell)
    streams = StreamApi(api, PersonSlots(config.streams_per_person), followers)
    app = build_app(api)
    metrics_mod.mount(app, metrics, engine, ids, takeover, config.ops_allow)
    return {"api": api, "app": app, "streams": streams, "metrics": metrics}


def build_recorders(
    config: Config,
    sessions: sessionmaker[Session],
    commits: CommitSignal | None = None,
    bell: Doorbell | None = None,
) -> list[MachineRecorder]:
    """One recorder per configured Asterisk machine, each on its own ARI client (and one for
    call control, SPEC §11.2, woken by `bell`); one cache of what is provisioned for all."""
    # Imported here: an API-only process never loads the recorder.
    from pbxcontrol.ari.client import AriClient
    from pbxcontrol.recorder.machine import MachineRecorder
    from pbxcontrol.recorder.provisioned import ProvisionedCache

    cache = ProvisionedCache(sessions)
    recorders = []
    for m in config.machines:
        ari = AriClient(
            m.ari_url,
            m.username,
            m.password,
            m.app,
            subscribe_all=m.subscribe_all,
            ping_interval=m.ping_interval,
            ping_timeout=m.ping_timeout,
            max_message=m.max_message,
        )
        recorders.append(
            MachineRecorder(
                m.id,
                ari,
                sessions,
                sweep_interval=m.sweep_interval,
                batch_size=config.batch_size,
                backlog=config.backlog_megabytes * 1024 * 1024,
                history_days=config.history_days,
                audit_days=config.audit_days,
                heartbeat=config.heartbeat,
                journal_seconds=config.journal_seconds,
                takeover=config.takeover_seconds,
                provisioned=cache,
                name=f"machine {m.id}",
                on_commit=commits,
                control=AriClient(
                    m.ari_url, m.username, m.password, m.app, timeout=CONTROL_TIMEOUT
                ),
                wake=(bell or Doorbell()).event(m.id),
            )
        )
    return recorders


def build_api(
    config: Config,
    engine: Engine,
    *,
    observe: Callable[[str, int, float], None] | None = None,
    followers: list[Follower] | None = None,
    bell: Doorbell | None = None,
) -> JsonApi:
    """The JSON API: auth with its login throttle, and the enabled plugins' functions and
    streams. `observe` is told each request's outcome (metrics); plugins' journal followers
    go to `followers` (the stream hub calls them; None: this process serves no streams)."""
    throttle = LoginThrottle(
        engine,
        config.login_failures_per_user,
        config.login_failures_per_address,
        config.login_window,
        slow_down_after=config.login_slow_down_after,
    )
    signer = token_signer(config, engine)
    authenticator = Authenticator(throttle, tokens=signer)
    api = JsonApi(engine, authenticator, observe) if observe else JsonApi(engine, authenticator)
    user_login.register(api, signer)
    stream_tickets.register(api)
    # Call control through the machines' lease holders: no ARI settings needed here.
    control = Control(engine, bell)
    # One for every plugin: their journal followers go to the stream hub (None: the CLI tools).
    journal = Journal(followers.append if followers is not None else None)
    for name in config.plugins:
        module = plugin.load(name)
        ctx = plugin.PluginContext(
            name=name,
            config=config.plugin_section(name),
            log=logging.getLogger(f"pbxcontrol.plugins.{name}"),
            _engine=engine,
            _add=api.add,
            _add_stream=api.add_stream,
            _control=control,
            _add_static=api.add_static,
            journal=journal,
            history_days=config.history_days,
        )
        try:
            module.setup(ctx)
        except Exception as exc:
            raise plugin.PluginError(f"plugin {name!r} failed to set up: {exc}") from exc
        log.info("plugin %s enabled", name)
    return api


def token_signer(config: Config, engine: Engine) -> TokenSigner:
    """Tokens signed with the installation's newest key, verified with any of its keys: every
    process and host of the database verifies every token. The keys are read again every few
    seconds, so a rotation (`pbxcontrol rotate-token-key`) needs no restart."""
    try:
        return TokenSigner(key_reader(engine), config.token_lifetime)
    except ValueError:
        raise StartupError(
            "the database has no token signing key: run `pbxcontrol initdb`"
        ) from None


def provision(config: Config, document: str, *, dry_run: bool = False) -> str:
    """Apply a provisioning document, all or nothing; what was done, for the operator."""
    from pbxcontrol import provisioning

    try:
        text = Path(document).read_bytes()
    except OSError as exc:
        raise StartupError(f"{document}: cannot read: {exc.strerror}") from None
    try:
        doc = provisioning.load_document(text)
    except provisioning.ProvisioningError as exc:
        raise StartupError(f"{document}: {exc}") from None
    engine, sessions = open_database(config)
    try:
        with sessions.begin() as session:
            summary = provisioning.apply(session, doc, dry_run=dry_run)
    except provisioning.ProvisioningError as exc:
        raise StartupError(f"{document}: {exc}") from None
    finally:
        engine.dispose()
    return summary.report(dry_run=dry_run)


def serve(config: Config, *, http: bool = True, record: bool = True) -> None:
    """Run the recorders and/or the HTTP API (in `[http] processes` processes) until
    SIGTERM or SIGINT; tell systemd (pbxcontrol.service.notify) when it is ready and stopping."""
    lifecycle.limit_malloc_arenas()
    stop = lifecycle.Stop()
    lifecycle.metrics_directory(config.http_processes if http else 1)
    sock = _listen(config) if http else None
    rt = start(config, sock, stop.event, http=http, record=record)
    if rt is None:
        log.info("stopped while waiting for the database")
        return
    workers = watchdog = None
    try:
        server = None
        if sock is not None:
            proxies = ClientAddress(config.trusted_proxies) if config.trusted_proxies else None

            hub = _hub_settings(rt)

            def make_server():
                return http_server.make_server(
                    rt.app, sock, config.http_threads, rt.streams, proxies, **hub
                )

            if config.http_processes > 1:
                # Fork before any thread starts (the recorders below): forking a threaded
                # process is unsafe. The supervisor replaces workers that die.
                watch = lifecycle.worker_watch(notify.watchdog_interval())
                serve_one = supervisor.waitress_worker(rt.engine, make_server, watch)
                count = config.http_processes - 1
                supervised = supervisor.Supervisor(serve_one, count, _worker_gone(rt))
                workers = supervisor.start(supervised)
            server = make_server()
        for recorder in rt.recorders:
            recorder.start()
        listening = _listen_for_intents(rt)
        watchdog = lifecycle.ready(server, workers, rt.recorders)
        lifecycle.run_until_stopped(stop, server)
    finally:
        if "listening" in locals():
            listening.set()
        if watchdog is not None:
            watchdog.stop()  # the threads it watches end on purpose now
        notify.notify("STOPPING=1")
        if workers is not None:
            workers.stop()
        rt.close()
    log.info("stopped")


def _listen_for_intents(rt: Runtime) -> threading.Event:
    """PostgreSQL: a recording process LISTENs for intents (recorder/intents.py). Set the
    returned event to stop it."""
    if rt.recorders and rt.engine.dialect.name == "postgresql":
        from pbxcontrol.recorder.intents import start_listening

        return start_listening(rt.engine.url.render_as_string(hide_password=False), rt.bell)
    return threading.Event()


def _hub_settings(rt: Runtime) -> dict[str, Any]:
    """The stream hub's, in each HTTP process: the metrics' gauge, the recorders' commits
    (they reach streams at once), the watch on the machines' leases (SPEC §12), the bound of
    what a stream's client may leave unread."""
    assert rt.metrics is not None
    config = rt.config
    return {
        "counted": rt.metrics.stream_count,
        "commits": rt.commits,
        "watch": Watch(config.takeover_seconds, config.forget_seconds),
        "stream_buffer": config.stream_buffer,
    }


def _worker_gone(rt: Runtime) -> Callable[[int], None]:
    """What the supervisor does for a worker that ended (killed, crashed, stopped): its
    metrics no longer count, and its streams' slots are free again (nobody else would)."""
    assert rt.metrics is not None and rt.streams is not None
    metrics, slots = rt.metrics, rt.streams.slots

    def gone(pid: int) -> None:
        metrics.mark_dead(pid)
        slots.release_process(pid)

    return gone


def _listen(config: Config):
    try:
        return http_server.listen(config.http_host, config.http_port)
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {config.http_host}:{config.http_port}: {exc.strerror}"
        ) from None
