"""The ``sri-jax`` commands: each module has ``add_arguments(parser)`` and ``run(args)``;
:mod:`sri_jax.cli` dispatches to them through one table."""
