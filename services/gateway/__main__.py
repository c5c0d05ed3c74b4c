import uvicorn

from consentry.logs import configure
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    configure("gateway", settings.log_level)
    uvicorn.run(create_app(settings), host=settings.gateway_host, port=settings.gateway_port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
