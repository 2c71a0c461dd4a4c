from mcphub_servers.searxng.server import main

main()
