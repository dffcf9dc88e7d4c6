"""One settings class for every process, read from ``HIVEPIPE_*`` environment variables."""

from __future__ import annotations

import ipaddress
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_WEAK_SECRETS = {"", "changeme", "secret", "token", "hivepipe"}
#: True while :meth:`Settings.for_administration` reads the settings: no secret is needed then.
_ADMINISTRATION: ContextVar[bool] = ContextVar("hivepipe_administration", default=False)


#: A network of an allowlist setting.
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Settings(BaseSettings):
    """Validated at start; refuses default secrets outside the embedded mode.

    The embedded mode is on when neither ``HIVEPIPE_KAFKA`` nor ``HIVEPIPE_DATABASE_URL`` is
    set: ``hivepipe up`` then starts its own broker, database and MQTT broker under
    ``data_dir`` and hands their URLs to the roles it spawns. The administration commands read
    them through :meth:`for_administration`.
    """

    model_config = SettingsConfigDict(env_prefix="HIVEPIPE_", extra="ignore")

    #: Kafka bootstrap servers, ``host:port[,...]``; unset (with ``database_url``): embedded.
    kafka: str | None = None
    #: PostgreSQL or TimescaleDB URL, ``postgresql://...``; unset (with ``kafka``): embedded.
    database_url: str | None = None
    #: The devices' MQTT broker, ``mqtt://host:1883`` (``mqtts://``: TLS); unset: embedded.
    mqtt_url: str | None = None
    #: The address the API listens on (and the other roles' metrics endpoints).
    api_host: str = "127.0.0.1"
    #: The API's port: REST, GraphQL, the networks' callbacks.
    api_port: int = 8080
    #: Where ``hivepipe up`` keeps the embedded servers' data and addresses.
    data_dir: Path = Path(".hivepipe")
    #: The networks' callbacks' secret (``X-Callback-Token``); generated when embedded.
    callback_token: SecretStr | None = None
    #: Prefix of every Kafka topic's name (docs/topics.md).
    topic_prefix: str = "hivepipe."
    #: Partitions of each topic hivepipe creates: the most workers sharing the work. Unset, on
    #: the embedded Kafka ``hivepipe up`` starts: one per worker (tansu's cost follows them).
    partitions: int = Field(default=4, ge=1, le=256)
    #: First level of the devices' MQTT topics, uplinks and commands (docs/ingest.md).
    mqtt_topic_prefix: str = "devices"
    #: The MQTT ingest's shared-subscription group; empty: a plain subscription.
    mqtt_share_group: str = "hivepipe"
    #: The MQTT ingest's client id: stable per replica (its persistent session holds the QoS 1
    #: messages not yet acknowledged); empty: ``hivepipe-ingest-<hostname>``.
    mqtt_client_id: str = ""
    #: How long the broker keeps the ingest's session (and queues its messages) while it is away.
    mqtt_session_expiry: int = Field(default=86_400, ge=0)
    #: Serve the MQTT ingest's Prometheus metrics on this port (none when unset).
    mqtt_metrics_port: int | None = None
    #: How long the MQTT ingest gathers messages after the first of a batch (ms) before it
    #: journals, publishes and acknowledges them together, while the last second's rate says a
    #: few more will come: each batch costs a database commit and a Kafka request, which tansu
    #: and the worker pay for (docs/benchmarks.md). A batch leaves earlier once no message has
    #: come for half of it, and once it holds a broker's in-flight window, learned from the
    #: first batch that stalled (ingest/mqtt/bridge.py). A message reaches Kafka up to this
    #: much later; devices do not wait for it (the broker acknowledges their publishes
    #: itself). 0: a batch is what has arrived when the last one is done. 120 cost less CPU
    #: but lost uplinks when the whole box was killed (docs/ingest.md): not longer than 60.
    mqtt_linger_ms: int = Field(default=60, ge=0, le=1000)
    #: Where a worker serves its Prometheus metrics (on ``api_host``); none when unset.
    worker_metrics_port: int | None = None
    #: API processes ``hivepipe up`` runs on one listening socket: when one dies, the others
    #: take the new connections while it is restarted (a kill -9 fails only its requests in
    #: flight). They count rate limits together in PostgreSQL unless ``rate_limit_storage`` is
    #: set to a shared one (``memory://`` is per process: replaced there when more than one).
    api_processes: int = Field(default=2, ge=1, le=64)
    #: Faust workers ``hivepipe up`` runs, each under its own stable ``worker_instance``
    #: (``<hostname>-worker-<n>``); more than the partition count leaves the extra ones idle.
    workers: int = Field(default=1, ge=1, le=64)
    #: MQTT adapters ``hivepipe up`` runs, each with its own client id, splitting the load on a
    #: shared subscription; a broker without shared subscriptions (amqtt) gets one.
    mqtt_adapters: int = Field(default=1, ge=1, le=64)
    #: Where ``hivepipe up`` serves its own Prometheus metrics (``hivepipe_role_restarts_total``),
    #: on ``api_host``; 0: not served.
    supervisor_metrics_port: int = Field(default=0, ge=0, le=65535)

    #: Set by ``hivepipe up`` in the processes it spawns: secrets may be generated ones.
    embedded: bool = False

    # Pipeline tuning.
    #: Most uplinks (or Orbit acks) a worker handles in one batch.
    batch_size: int = Field(default=1000, ge=1)
    #: Longest a worker's batch waits to fill (s).
    flush_interval: float = Field(default=0.1, gt=0)
    #: A worker's batch (uplinks, Orbit acks, webhooks) leaves once no record has arrived for
    #: this long (s): records come in bursts, one per fetch, so a burst is stored as soon as it
    #: has arrived instead of waiting out ``flush_interval`` (stream/batching.py).
    flush_quiet: float = Field(default=0.005, gt=0)
    #: PostgreSQL connections per process (API or worker).
    db_pool_size: int = Field(default=8, ge=1)
    #: Prepared statements on the pools' connections (off for a PgBouncer older than 1.21 in
    #: transaction mode); see services.platform.db.open_pool.
    db_prepare: bool = True
    #: Kafka consumer-group session timeout (s). tansu completes a group join only after half
    #: of it, so a short one makes workers start fast; heartbeats run in their own thread.
    consumer_session_timeout: float = Field(default=10.0, ge=2.0)
    #: A worker's stable name in its consumer group (static membership: started again under
    #: the same name, it takes its partitions back at once). ``hivepipe up`` names its workers;
    #: empty: a new member at each start. Two running workers must never share one.
    worker_instance: str = ""
    #: ``hivepipe up`` recycles the embedded Kafka (tansu keeps every message in memory and
    #: applies no retention) once it holds more than this many MiB; lossless with the intake
    #: journal, which replays what was not stored yet. 0: never.
    embedded_kafka_max_mib: int = Field(default=1024, ge=0)
    #: ``hivepipe up`` also recycles the embedded Kafka once it has used more than this share
    #: of one core over a minute: a fetch that finds records lists every produce request its
    #: partition holds, so tansu's CPU grows with what it holds (five times in five minutes at
    #: 500 uplinks/s). 0: never. With Kafka (``kafka``) neither applies.
    embedded_kafka_max_cpu: float = Field(default=0.25, ge=0)
    #: When the embedded Mosquitto (``hivepipe up`` without ``mqtt_url``) writes what it has
    #: acknowledged to its store (docs/operations.md, "Mosquitto's persistent sessions").
    #: ``on-receipt``: when asked to (SIGUSR1), by the MQTT adapter once it has received
    #: messages (at most every ``embedded_mqtt_save_delay_ms``) and by ``hivepipe up`` as each
    #: message comes while an adapter is away, and once a second anyway; a power cut loses what
    #: Mosquitto acknowledged in the last few milliseconds, at most, that the adapter had not
    #: journaled yet. ``every-change``: an fsync'd save after each change Mosquitto counts,
    #: which is each PUBACK of the adapter (about 0.2 ms of its CPU per message at 500/s)
    #: and each message queued for an adapter that is away, but not a message handed to a
    #: connected adapter: that one is on disk only once a later change has come.
    #: ``every-second``: once a second (Mosquitto's own default is half an hour); a power cut
    #: then loses what it had acknowledged and the adapter had not journaled yet (the last tens
    #: of milliseconds; up to a second or two when the adapter was away). Each save rewrites
    #: the whole store (every persistent session). With your own broker, its own settings
    #: decide.
    embedded_mqtt_save: Literal["on-receipt", "every-change", "every-second"] = "on-receipt"
    #: ``on-receipt``: the longest the MQTT adapter waits, after it has asked the embedded
    #: Mosquitto for a save, before it asks again for the messages received since (ms): the
    #: window a power cut can hit, against a save (a rewrite and an fsync of the store) per
    #: this many milliseconds at most.
    embedded_mqtt_save_delay_ms: int = Field(default=10, ge=1, le=1000)
    #: Set by ``hivepipe up`` for its roles: the embedded Mosquitto's pid file, which the MQTT
    #: adapter reads to ask it for saves (``on-receipt``).
    embedded_mqtt_pid_file: Path | None = None
    #: How long a worker's fetch may wait for records (ms). Kafka answers a fetch as soon as
    #: records have arrived; tansu holds every fetch this long, so on the embedded broker it is
    #: the floor of every hop's latency and the window a worker's batch gathers in: 100 against
    #: 50 took a quarter off the CPU per uplink at 500/s for 25 ms more p99, 150 against 100
    #: another 5-10 % (worker and tansu) for 25-30 ms more: callback → stored p99 about
    #: 130 ms at 500/s (docs/benchmarks.md).
    fetch_max_wait_ms: int = Field(default=150, ge=1, le=5000)

    #: How long the API's Kafka producer gathers callbacks' uplinks into one produce request
    #: (ms). Each callback still waits for its own acknowledgement. The claims gathered by
    #: ``claim_linger_ms`` leave together anyway, so a longer linger saved no CPU at 500
    #: callbacks/s (5 ms against 1) and only slowed a flood's answers (docs/benchmarks.md).
    callback_linger_ms: int = Field(default=1, ge=0, le=1000)
    #: Statements the API runs at once for the uplink callbacks' dedup claims (and journal
    #: rows): the claims of callbacks that arrive while they run share the next statement,
    #: one transaction and one WAL flush for many (services/uplinks/claims.py). 0: one
    #: statement per callback.
    claim_slots: int = Field(default=2, ge=0, le=64)
    #: How long a claim statement gathers the claims of the callbacks that arrive meanwhile
    #: (ms), up to 16, and only while the last second's rate says more than a few will come:
    #: at a steady rate it turns a statement, a transaction and a WAL flush per callback into
    #: one per group, and their uplinks then leave in one Kafka request, which is what tansu
    #: and the worker pay for (docs/benchmarks.md). A callback waits up to this much longer
    #: for its answer; a network server that sends one callback at a time is held down to
    #: about 100 a second: set 0 for it. 0: no linger.
    claim_linger_ms: int = Field(default=40, ge=0, le=1000)

    #: CPU niceness of the roles that work in batches: the Faust worker, and the Kafka broker
    #: ``hivepipe up`` embeds. On a saturated box the API and PostgreSQL then answer first
    #: (services/platform/runtime.py); 0 runs everything at the same priority.
    background_nice: int = Field(default=5, ge=0, le=19)

    # Ingest rules.
    #: An uplink received again within this many seconds is a duplicate.
    dedup_window_seconds: int = Field(default=600, ge=1)
    #: Largest API request body (413 beyond it), and largest MQTT message.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    #: The intake journal (services/uplinks/journal.py): each accepted uplink is kept in
    #: PostgreSQL until stored, so a broker that loses its log (the embedded tansu keeps it in
    #: memory) or a power cut loses nothing. False for a replicated Kafka cluster: a row then
    #: lives only until Kafka's acknowledgement (docs/operations.md says what it costs).
    intake_journal: bool = True
    #: Seconds after which a journaled uplink not yet stored is published again (at a worker's
    #: start: ``journal_replay_at_start``, for a broker that came back empty).
    journal_replay_after: float = Field(default=60.0, gt=0)
    #: At a worker's start (a replay interval after it joined its group), journaled uplinks
    #: accepted before it joined and older than this (s) are replayed.
    journal_replay_at_start: float = Field(default=0.0, ge=0)
    #: How often a worker looks for journaled uplinks to replay (s).
    journal_replay_interval: float = Field(default=5.0, gt=0)
    #: A callback is answered within this many seconds whatever PostgreSQL or Kafka does
    #: (503 ``pipeline_timeout`` past it; the network retries): Sigfox gives up at 10 s. When
    #: the database freezes, hundreds of callbacks reach it at once, and on two busy cores the
    #: last of their 503s left up to a second later: 4 s keeps every answer within 5.
    callback_deadline: float = Field(default=4.0, gt=0)

    # API.
    #: An account's requests per minute, unless its own limit is set.
    rate_limit_per_minute: int = Field(default=60, ge=1)
    #: An account's requests per day, unless its own limit is set.
    rate_limit_per_day: int = Field(default=10_000, ge=1)
    #: Rate-limit counters: ``memory://`` (per process), or shared by several API processes:
    #: ``postgresql://`` (hivepipe's own database, what ``hivepipe up`` uses when it runs more
    #: than one) or ``redis://host:6379``.
    rate_limit_storage: str = "memory://"
    #: How often each API process writes the keys' last_used times and usage counters.
    stats_flush_seconds: float = Field(default=2.0, gt=0)
    #: Bounded wait for the MQTT broker's PUBACK of a command, or a network server's answer.
    command_timeout: float = Field(default=5.0, gt=0, le=60)

    # LoRaWAN downlinks: the one network server of this deployment
    # (services/downlinks/network_servers.py).
    #: The network server that sends LoRaWAN downlinks; unset: none.
    lorawan_server: Literal["tts", "chirpstack"] | None = None
    #: The network server's API base URL.
    lorawan_url: str | None = None
    #: The network server's API key (a TTS API key or a ChirpStack token).
    lorawan_api_key: SecretStr | None = None
    #: The Things Stack application of the devices.
    tts_application_id: str | None = None
    #: The Things Stack webhook that downlinks are pushed through.
    tts_webhook_id: str | None = None
    #: The TTS end-device id of a DevEUI (``{dev_eui}`` lower-case, ``{DEV_EUI}`` upper-case).
    tts_device_id: str = "eui-{dev_eui}"

    # Sigfox callbacks.
    #: Where Sigfox callbacks may come from (CIDRs, comma-separated; empty: anywhere). Sigfox
    #: calls from 185.110.96.0/22 (wire-formats.md); the token is checked either way.
    sigfox_allowed_sources: Annotated[tuple[IPNetwork, ...], NoDecode] = ()

    # Webhooks.
    #: Private networks webhook URLs may point to (CIDRs, comma-separated).
    webhook_allowed_cidrs: Annotated[tuple[IPNetwork, ...], NoDecode] = ()
    #: Accept plain ``http://`` webhook URLs (self-hosted receivers, tests).
    webhook_allow_http: bool = False
    #: Webhooks a device may have (POST beyond it: 409 ``too_many_webhooks``).
    webhook_max_per_device: int = Field(default=5, ge=1, le=100)
    #: Longest webhook URL accepted (422 ``url_too_long``).
    webhook_max_url_length: int = Field(default=2048, ge=64, le=8192)
    #: Delays (s) before the 2nd, 3rd, ... attempt, comma-separated (default: about a day,
    #: ``services.webhooks.policy.DEFAULT_SCHEDULE``); tests use e.g. ``0.2,0.5,1``.
    webhook_retry_schedule: Annotated[tuple[float, ...], NoDecode] = (
        5.0,
        30.0,
        120.0,
        600.0,
        1800.0,
        3600.0,
        10800.0,
        21600.0,
        43200.0,
    )
    #: Each retry delay is spread by this fraction either way (0.2: ±20 %).
    webhook_retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    #: How often the worker looks for due retries when it found none (s).
    webhook_retry_poll_interval: float = Field(default=0.5, gt=0, le=60)
    #: Due retries claimed (and sent concurrently) at a time by one worker.
    webhook_retry_batch: int = Field(default=200, ge=1, le=5000)
    #: A claimed retry is due again after this (s) if its worker died while sending it.
    webhook_retry_lease: float = Field(default=300.0, ge=1)
    #: Disable a webhook failing for this long (s) and ``webhook_disable_min_failures`` times.
    webhook_disable_after: float = Field(default=5 * 86_400.0, gt=0)
    #: Failed attempts a webhook must also reach before it is disabled.
    webhook_disable_min_failures: int = Field(default=20, ge=1)
    #: The worker's cache of a device's webhooks lives this long (s).
    webhook_cache_ttl: float = Field(default=5.0, ge=0)
    #: The webhook agent's batches of stored messages: at most this many, or what came within.
    webhook_batch_size: int = Field(default=1000, ge=1)
    #: Longest the webhook agent's batch waits to fill (s).
    webhook_flush_interval: float = Field(default=0.05, gt=0)
    #: Batches of the webhook agent sent at once (each device's order is kept across them).
    webhook_batches_in_flight: int = Field(default=8, ge=1, le=64)
    #: How long a batch's points wait for a receiver still busy with the same device's earlier
    #: points (s); then they go through the retry queue, so a slow receiver never holds up the
    #: others.
    webhook_lane_wait: float = Field(default=0.25, gt=0, le=60)
    #: Batches of claimed retries sent at once; a webhook with retries in flight in this worker
    #: gets no more claimed until they are done (a hanging receiver holds one batch, not all).
    webhook_retry_batches_in_flight: int = Field(default=4, ge=1, le=64)
    #: Requests in flight per process.
    webhook_max_concurrency: int = Field(default=512, ge=1)
    #: Requests in flight per receiver host name.
    webhook_max_per_host: int = Field(default=32, ge=1)
    #: Delivery attempts kept per webhook (the newest).
    webhook_deliveries_keep: int = Field(default=1000, ge=1)
    #: Delivery attempts are kept at most this many days.
    webhook_deliveries_days: int = Field(default=7, ge=1)

    # Timescale policies.
    #: TimescaleDB chunk interval of the points (a PostgreSQL interval).
    chunk_interval: str = "1 day"
    #: TimescaleDB compresses points older than this.
    compress_after: str = "7 days"
    #: TimescaleDB drops raw points older than this (over 8 days); unset: never.
    retention: str | None = None

    # JavaScript codecs of the accounts' own device models (docs/codecs.md).
    #: Longest one call of a codec may run (ms): past it the uplink is a ``codec_timeout``.
    codec_timeout_ms: int = Field(default=50, ge=1, le=10_000)
    #: Memory of one model's V8 isolate (MiB): past it the uplink is a ``codec_memory``.
    codec_memory_mib: int = Field(default=32, ge=8, le=1024)
    #: Largest decoded output of one uplink (bytes of JSON): beyond it, a ``codec_result``.
    codec_max_output_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: Compiled codecs a process keeps (one V8 isolate each, a few MiB); the least recently
    #: used beyond it are closed and compiled again when needed.
    codec_cache_size: int = Field(default=256, ge=1, le=10_000)
    #: A model whose codec failed on every uplink for this long (s) is flagged ``failing``.
    codec_failing_after: float = Field(default=3600.0, gt=0)

    #: Log level of the ``hivepipe`` processes.
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("webhook_allowed_cidrs", "sigfox_allowed_sources", mode="before")
    @classmethod
    def _split_cidrs(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(
                ipaddress.ip_network(part.strip(), strict=False)
                for part in value.split(",")
                if part.strip()
            )
        return value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(float(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _check_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 <= delay <= 7 * 86_400 for delay in value):
            raise ValueError("each retry delay must be between 0 and 7 days")
        return value

    @field_validator("kafka")
    @classmethod
    def _strip_scheme(cls, value: str | None) -> str | None:
        if value and value.startswith("kafka://"):
            return value.removeprefix("kafka://")
        return value

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.embedded or _ADMINISTRATION.get():
            return self
        token = self.callback_token.get_secret_value() if self.callback_token else ""
        if (self.kafka or self.database_url) and (token in _WEAK_SECRETS or len(token) < 16):
            raise ValueError(
                "HIVEPIPE_CALLBACK_TOKEN must be set to a secret of at least 16 characters "
                "when hivepipe runs against configured servers"
            )
        return self

    @classmethod
    def for_administration(cls) -> Settings:
        """The settings of the administration commands (``hivepipe users``, ``keys``,
        ``accounts``, ``topics``): they talk to the database or the broker directly, so no callback
        secret is required to run them."""
        reading = _ADMINISTRATION.set(True)
        try:
            return cls()
        finally:
            _ADMINISTRATION.reset(reading)

    def as_env(self) -> dict[str, str]:
        """These settings as ``HIVEPIPE_*`` variables, to hand to a child process."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                text = value.get_secret_value()
            elif isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, tuple):
                text = ",".join(str(item) for item in value)
            else:
                text = str(value)
            env[f"HIVEPIPE_{name.upper()}"] = text
        return env

    def topic(self, name: str) -> str:
        """The full Kafka topic name for one of ``services.platform.events`` topic names."""
        return f"{self.topic_prefix}{name}"

    @property
    def mqtt_save_requests_pid_file(self) -> Path | None:
        """The embedded Mosquitto's pid file when its saves are asked for (``on-receipt``,
        services/platform/broker_saves.py), else None: the MQTT adapter's rule and the
        supervisor's."""
        if self.embedded_mqtt_save != "on-receipt":
            return None
        return self.embedded_mqtt_pid_file

    @property
    def token(self) -> str:
        """The callback token in clear (empty when none is configured)."""
        return self.callback_token.get_secret_value() if self.callback_token else ""
