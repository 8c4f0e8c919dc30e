import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from config.static_files import require_collected_static_files

application = get_wsgi_application()
require_collected_static_files()  # gunicorn and runserver start here; neither runs collectstatic
