from aiohttp import web

from ..config import ServerConfig

CONFIG = web.AppKey("config", ServerConfig)
# One random id per server start, shared by hello, the event stream and the metrics summary.
INSTANCE_ID = web.AppKey("dsm.instance_id", str)
