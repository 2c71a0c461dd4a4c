"""Weather from Open-Meteo (no key needed): current conditions, daily forecast, place search; plus the Amap
`maps_weather` tool when `AMAP_MAPS_API_KEY` is set. Run with `python -m mcphub_servers.weather`."""
