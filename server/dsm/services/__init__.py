"""Domain logic of the companion server; never imports aiohttp.web."""
