"""How a job reaches S3-compatible object storage, carried to every process that runs it.

Three libraries read and write a job's objects: Beam's filesystem (the input files), pyarrow (the
store's data files, the reference data, the run's shared scratch files) and pyiceberg (the store's
metadata). Each configures itself its own way: Beam from its pipeline options (``--s3_endpoint_url``
and friends, ``S3Options``), pyarrow and the AWS SDK from the environment (``AWS_ENDPOINT_URL``,
``AWS_REGION``, ``AWS_ACCESS_KEY_ID``...), pyiceberg from catalog properties
(``sinks.iceberg.catalog.file_io_properties``, filled from the same environment).

``ObjectStorage`` is one frozen value for all three: made once by the submitting process from Beam's
S3 flags, each falling back on the AWS SDK's variable of the same meaning, then handed to every
DoFn that touches storage, whose ``setup`` calls ``activate`` on the worker: a worker on another
machine, started without the submitter's environment, reaches the same endpoint with the same
settings. Keys given as flags travel with the job (as Beam's own options do); without them each
process uses its own AWS credential chain (a worker's role, its environment). ``gs://`` needs no
setting here: Google's libraries find the machine's credentials themselves.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, S3Options

# ObjectStorage field -> (Beam's S3Options flag, the AWS SDK's environment variables, first set wins).
_SETTINGS = {
    "endpoint_url": ("s3_endpoint_url", ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")),
    "region": ("s3_region_name", ("AWS_REGION", "AWS_DEFAULT_REGION")),
    "access_key_id": ("s3_access_key_id", ("AWS_ACCESS_KEY_ID",)),
    "secret_access_key": ("s3_secret_access_key", ("AWS_SECRET_ACCESS_KEY",)),
    "session_token": ("s3_session_token", ("AWS_SESSION_TOKEN",)),
}
# Settings taken from the submitter's environment when no flag gives them. Keys are not among them:
# a key of the submitter's environment is its own identity, not the job's, and stays on its machine.
_FROM_ENVIRONMENT = ("endpoint_url", "region")


@dataclasses.dataclass(frozen=True)
class ObjectStorage:
    """S3 settings of a job (None: each process's own default). ``repr`` hides the keys."""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = dataclasses.field(default=None, repr=False)
    secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def of(cls, pipeline_args: list[str] | None, environ: Mapping[str, str] = os.environ) -> "ObjectStorage":
        """The job's settings: Beam's S3 flags in ``pipeline_args``; the endpoint and the region,
        when no flag gives them, from the AWS SDK's variables of ``environ`` (the submitter's)."""
        flags = PipelineOptions(pipeline_args or []).view_as(S3Options)
        values = {}
        for name, (flag, variables) in _SETTINGS.items():
            value = getattr(flags, flag)
            if value is None and name in _FROM_ENVIRONMENT:
                value = next((environ[v] for v in variables if environ.get(v)), None)
            values[name] = value
        return cls(**values)

    @classmethod
    def for_job(cls, pipeline_args: list[str] | None) -> tuple["ObjectStorage", list[str]]:
        """What a Beam job (``batch``, ``rerate``) does first: its settings (``of``), applied in
        this process, and its pipeline options carrying them to the workers (``with_beam_args``)."""
        storage = cls.of(pipeline_args)
        storage.activate()
        return storage, storage.with_beam_args(pipeline_args)

    def beam_args(self) -> list[str]:
        """The flags of Beam's S3 filesystem for these settings: added to the job's pipeline options,
        they reach Beam's filesystem in the submitter and in every portable worker (the SDK harness
        configures it from the job's options)."""
        return [f"--{_SETTINGS[name][0]}={value}" for name, value in self._given().items()]

    def with_beam_args(self, pipeline_args: list[str] | None) -> list[str]:
        """``pipeline_args`` plus the flags of ``beam_args`` it does not already give."""
        args = list(pipeline_args or [])
        given = {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}
        return args + [flag for flag in self.beam_args() if flag.split("=", 1)[0] not in given]

    def activate(self) -> None:
        """Make this process reach storage with these settings: the AWS SDK's variables (read by
        pyarrow, the AWS SDK and ``sinks.iceberg.catalog``) and Beam's filesystem options. Settings
        left None change nothing. Called by the submitter and in ``DoFn.setup`` on every worker."""
        for name, value in self._given().items():
            for variable in _SETTINGS[name][1]:
                os.environ[variable] = value
        # A portable worker's filesystem already has the job's options (these flags among them,
        # ``with_beam_args``): only a process that has none (a DaskRunner worker) is given these.
        if self._given() and getattr(FileSystems, "_pipeline_options", None) is None:
            FileSystems.set_options(PipelineOptions(self.beam_args()))

    def _given(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in _SETTINGS if getattr(self, name) is not None}
