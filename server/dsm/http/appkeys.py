from aiohttp import web

from ..config import ServerConfig
from ..services.jobs.budget import BudgetPolicy

CONFIG = web.AppKey("config", ServerConfig)
# One random id per server start, shared by hello, the event stream and the metrics summary.
INSTANCE_ID = web.AppKey("dsm.instance_id", str)
# The Open Cloud budget per universe (CCU settings); the limiter paces to it.
BUDGET = web.AppKey("dsm.budget", BudgetPolicy)
