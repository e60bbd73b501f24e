"""Django's makemigrations, with the dependency on django_autoembed added where it is needed."""

from django.core.management.commands.makemigrations import Command as MakeMigrationsCommand

from ...autodetector import AutoembedAutodetector


class Command(MakeMigrationsCommand):
    autodetector = AutoembedAutodetector
