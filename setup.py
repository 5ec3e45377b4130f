"""Install the usage rating pipeline; also Beam's ``--setup_file`` for remote workers."""

from setuptools import find_packages, setup

setup(
    name="usage-rating",
    version="0.1.0",
    description="Telecom usage rating pipelines on Apache Beam: CDRs in, invoice-ready charges out.",
    python_requires=">=3.11",
    packages=find_packages(include=["pipelines*", "rating*", "cdr_schemas*", "sinks*", "synth*"]),
    package_data={"cdr_schemas": ["avro/*.avsc"]},
    install_requires=[
        "apache-beam>=2.60",
        "pyarrow>=15",
        "polars>=1.0",
        "numba>=0.60",
        "numpy>=1.26",
        "fastavro>=1.9",
        # Inflates deflate Avro blocks (cdr_schemas.decoders.avro.raw_inflater; zlib when absent):
        # python-isal, maintained bindings to Intel's ISA-L, inflates 1.7x faster than zlib and
        # decodes deflate files 1.25x faster end to end (perf/bench_decode.py, perf/RESULTS.md).
        "isal>=1.6",
        "google-cloud-pubsub>=2.20",
        # Tariff plans are YAML (read with yaml.safe_load); Beam already depends on PyYAML.
        "PyYAML>=6.0",
        # The output store as Apache Iceberg tables (issue 13, sinks/iceberg/): SQL catalog on SQLite
        # by default or on PostgreSQL (--catalog-uri postgresql+psycopg2://..., its driver
        # psycopg2-binary comes with sql-postgres), Arrow to read and to register Parquet files.
        "pyiceberg[sql-sqlite,sql-postgres,pyarrow]>=0.12,<0.13",
    ],
    extras_require={
        # moto's server mode: a real S3-compatible server on loopback for the object-storage store
        # tests (tests/object_store_server.py), with boto3 to look inside its buckets.
        # Beam's DaskRunner and S3 filesystem: tests/test_distributed.py runs batch and rerate on a
        # dask.distributed cluster with inputs on S3.
        "test": ["pytest>=8", "hypothesis>=6.100", "moto[server]>=5.0", "apache-beam[dask,aws]>=2.60"],
        # Inputs on gs:// read by Beam's GCS filesystem, the Dataflow runner (runner_configs/dataflow.flags).
        "gcp": ["apache-beam[gcp]>=2.60"],
        # Inputs on s3:// read by Beam's S3 filesystem (the store and the reference use pyarrow's, built in).
        "aws": ["apache-beam[aws]>=2.60"],
        # Beam's DaskRunner on a dask.distributed cluster (a prototype runner; issue 14).
        "dask": ["apache-beam[dask]>=2.60"],
    },
    entry_points={"console_scripts": ["usage-rating=pipelines.cli:main"]},
)
