from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError

from integrations.keys import create_key, revoke_key
from integrations.models import ApiKey, Scope


class Command(BaseCommand):
    help = "Scoped API keys: create NAME --scope read|write|admin (prints the key once), list, revoke NAME."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a key; its last word on stdout is the key")
        create.add_argument("name")
        create.add_argument("--scope", required=True, choices=Scope.values)
        sub.add_parser("list", help="every key: name, scope, prefix, created, last used, revoked")
        revoke = sub.add_parser("revoke", help="revoke a key at once")
        revoke.add_argument("name")

    def handle(self, *args, **options) -> None:
        action = options["action"]
        if action == "create":
            try:
                row, key = create_key(options["name"], options["scope"])
            except (ValueError, IntegrityError) as exc:
                raise CommandError(f"cannot create key {options['name']!r}: "
                                   f"{'the name is taken' if isinstance(exc, IntegrityError) else exc}") from None
            self.stderr.write(f"created {row.scope} key {row.name!r}; it is shown once, store it now:")
            self.stdout.write(key)
        elif action == "list":
            for row in ApiKey.objects.all():
                state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M:%S}" if row.revoked_at else "active"
                used = f"{row.last_used_at:%Y-%m-%d %H:%M:%S}" if row.last_used_at else "never"
                self.stdout.write(f"{row.name}\t{row.scope}\t{row.prefix}…\tcreated {row.created_at:%Y-%m-%d %H:%M:%S}"
                                  f"\tlast used {used}\t{state}")
        elif action == "revoke":
            if not revoke_key(options["name"]):
                raise CommandError(f"no active key named {options['name']!r}")
            self.stdout.write(f"revoked {options['name']}")
