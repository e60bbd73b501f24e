"""Django's migrate with our autodetector (Django requires makemigrations and migrate to agree)."""

from django.core.management.commands.migrate import Command as MigrateCommand

from ...autodetector import AutoembedAutodetector


class Command(MigrateCommand):
    autodetector = AutoembedAutodetector
