from mcphub_servers.weather.server import main

main()
