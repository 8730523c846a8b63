"""Rehearse `pulumi up`: run the Pulumi program under mocks that apply each registration to Docker.

`python -m rehearsal up|down --stack dev|prod|swarm`, `python -m rehearsal check`
(docs/rehearsal.md). Modules: `runner` runs a Pulumi program on a mock engine and records what it
registers (shared with the mocks unit tests, tests/infra); `appliers` apply each registration to the
engine (`dispatch` by type, `docker`, `swarm`); `stack` is `up`/`down`; `stack_config` reads a
stack's configuration (the rehearsal's own stack files are in `stacks/`); `state` records what was
applied; `engine` holds the Docker client and conversions; `swarm_node` makes this engine a
single-node swarm; `check` lists what the machine lacks.
"""
