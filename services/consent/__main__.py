import sys

from consentry import tracing
from consentry.patches import install_group_fencing
from services.consent.app import create_app
from services.consent.settings import ConsentSettings
from services.consent.views import InsecureConfiguration

# faust's command line knows these level names only.
FAUST_LEVELS = {"CRITICAL": "crit", "CRIT": "crit", "ERROR": "error", "WARNING": "warn", "WARN": "warn", "INFO": "info", "DEBUG": "debug"}


def main() -> None:
    settings = ConsentSettings()
    tracing.setup("consent", settings.otlp_endpoint, settings.trace_file)
    try:
        app = create_app(settings)
    except InsecureConfiguration as exc:
        print(f"consentry consent: refusing to start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    install_group_fencing(settings.session_timeout_ms / 1000)  # a worker expelled from its group writes nothing more
    level = FAUST_LEVELS.get(settings.log_level.upper(), "info")
    # faust's own command line runs the worker (with its web server for the views).
    sys.argv = [sys.argv[0], "worker", "--loglevel", level]
    app.main()


if __name__ == "__main__":
    main()
