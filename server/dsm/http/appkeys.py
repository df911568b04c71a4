from aiohttp import web

from ..config import ServerConfig
from ..services.streams import StreamRegistry

CONFIG = web.AppKey("config", ServerConfig)
# One random id per server start, shared by hello, the event stream and the metrics summary.
INSTANCE_ID = web.AppKey("dsm.instance_id", str)
# Open event streams per token, ended on revocation (set by http/streams.lifecycle).
STREAMS = web.AppKey("dsm.streams", StreamRegistry)
