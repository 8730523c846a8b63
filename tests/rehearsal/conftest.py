"""The applier's tests run the Pulumi runtime in-process."""

import logging

# A registration that fails on purpose also leaves "Future exception was never retrieved" on the
# asyncio logger when the runtime's futures are collected; the test has already checked the error.
logging.getLogger("asyncio").setLevel(logging.CRITICAL)
