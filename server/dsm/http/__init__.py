"""The only code that imports aiohttp.web: middlewares, routes and thin views."""
