from mcphub_servers.arxiv.server import main

main()
