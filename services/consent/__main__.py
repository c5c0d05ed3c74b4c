import sys

from services.consent.app import create_app
from services.consent.settings import ConsentSettings


def main() -> None:
    settings = ConsentSettings()
    app = create_app(settings)
    # faust's own command line runs the worker (with its web server for the views).
    sys.argv = [sys.argv[0], "worker", "--loglevel", settings.log_level.lower()]
    app.main()


if __name__ == "__main__":
    main()
