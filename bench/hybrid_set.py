"""Writes bench/hybrid_set.json: the labelled set the hybrid search is measured on.

Three classes of query, each with one relevant document:

- ``exact``: a code, a part number or a name that only the relevant document holds, among
  families of documents that say the same kind of thing with look-alike codes. A search by
  meaning sees a family, not the one member: full-text search sees the token.
- ``paraphrase``: what a document says, in other words; the query shares no word with it
  (stop words aside), so full-text search finds nothing, and a search by meaning does.
- ``both``: a few of the document's own words, which both sides find.

    python -m bench.hybrid_set      # rewrites the JSON (deterministic)
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

ERROR_CAUSES = [
    "the storage quota of the account is full; delete old files or ask for more space",
    "the upload took too long and the connection was closed; check the network",
    "the file type is not accepted; convert it to one of the listed formats",
    "the file is larger than the limit for one upload; split it into parts",
    "another upload of the same file is still running; wait for it to finish",
    "the file name holds characters that are not allowed; rename it",
    "the folder was moved while the upload ran; choose the folder again",
    "the sharing link has expired; ask its owner for a new one",
    "the account is locked after too many attempts; wait fifteen minutes",
    "the server is under maintenance; try again after the announced window",
    "the file is encrypted with a password; remove the protection first",
    "the archive is damaged; create it again and upload the new copy",
]
ERROR_CODES = [
    "E4021", "E4012", "E4102", "E4210", "E4201", "E4120",
    "E2401", "E2410", "E1024", "E1042", "E4011", "E4220",
]  # fmt: skip

PARTS = [
    ("intake filter", "every six months, or sooner in dusty rooms"),
    ("pressure valve", "when the pump hisses or loses pressure"),
    ("drive belt", "when it cracks or slips on the pulley"),
    ("seal kit", "when water drips under the housing"),
    ("control board", "when the display stays dark"),
    ("impeller", "when the flow drops although the filter is clean"),
    ("motor brushes", "when the motor sparks or stutters at start"),
    ("float switch", "when the pump runs dry or never stops"),
    ("check valve", "when water flows back after the pump stops"),
    ("capacitor", "when the motor hums but does not turn"),
    ("bearing set", "when the pump grinds or rattles"),
    ("pressure gauge", "when the needle sticks or shows zero under load"),
]
PART_CODES = [
    "KX-7730", "KX-7703", "KX-3770", "KX-7037", "KX-7370", "KX-7307",
    "KX-3707", "KX-0773", "KX-7730B", "KX-7731", "KX-7713", "KX-1773",
]  # fmt: skip

PEOPLE = [
    ("Ilse Vellenkamp", "soil", "field trials in the north valley"),
    ("Ines Vallenkamp", "water", "river sampling in the south valley"),
    ("Iris Vellekamp", "plant", "greenhouse trials on the east campus"),
    ("Ida Wellenkamp", "climate", "weather stations on the west ridge"),
    ("Inge Vollenkamp", "insect", "pollinator counts in the orchards"),
    ("Isa Vellenkemp", "forest", "tree surveys in the high woods"),
    ("Ilka Fellenkamp", "marine", "coastal dives off the harbour"),
    ("Irma Vellenkampf", "microbe", "lab cultures in the basement"),
    ("Ivy Vellinkamp", "bird", "ringing station on the lake"),
    ("Isolde Vellencamp", "fungus", "mushroom counts after rain"),
]

INCIDENTS = [
    ("INC-58213", "the checkout page timed out after a database failover",
     "restarting the payment service"),
    ("INC-58231", "search results were empty after an index rebuild", "rebuilding the index again"),
    ("INC-52813", "emails were sent twice after a queue worker restarted",
     "clearing the duplicate jobs"),
    ("INC-58321", "images failed to load after a storage bucket moved",
     "updating the bucket address"),
    ("INC-85213", "logins failed after a certificate expired", "renewing the certificate"),
    ("INC-58123", "reports showed yesterday's numbers after a cache stuck",
     "flushing the cache"),
    ("INC-51823", "the mobile app crashed at start after a release", "rolling the release back"),
    ("INC-58312", "invoices had wrong totals after a tax table changed",
     "correcting the tax table"),
    ("INC-28513", "uploads stalled after a disk filled up", "adding disk space"),
    ("INC-58132", "notifications stopped after a provider changed its keys",
     "rotating the keys"),
]  # fmt: skip

RELEASES = [
    ("Zephyrine", "spring", "offline mode and a faster start"),
    ("Zephyrion", "autumn", "shared folders and a new editor"),
    ("Zeffirine", "winter", "dark mode and smaller downloads"),
    ("Zephyrant", "summer", "calendar sync and reminders"),
    ("Zefyrine", "early spring", "voice notes and tags"),
    ("Zephirine", "late autumn", "two-step sign-in and audit logs"),
    ("Zephyrina", "midwinter", "printing and page layouts"),
    ("Xephyrine", "late summer", "an API and webhooks"),
]

HELP = [
    ("password", "Forgotten password",
     "If you forgot your password, open the sign-in page, choose Forgot password and follow "
     "the link we email you."),
    ("cancel", "Ending a subscription",
     "To stop your subscription, open Billing, choose Cancel plan, and you keep access until "
     "the period ends."),
    ("refund", "Refunds",
     "We return the money for an order within fourteen days if the goods come back unused in "
     "their box."),
    ("shipping", "Delivery times",
     "Parcels inside the country arrive in two to four working days; abroad it takes up to two "
     "weeks."),
    ("invoice", "Invoices",
     "Every payment produces an invoice, which you can download as a PDF from the Orders page."),
    ("twofactor", "Two-step verification",
     "Turn on two-step verification in Security settings so that a code from your phone is "
     "needed at each sign-in."),
    ("export", "Exporting data",
     "Download all your data as a ZIP archive from Privacy settings; large archives are "
     "prepared overnight."),
    ("delete", "Closing an account",
     "To close your account for good, open Privacy settings and choose Delete account; this "
     "cannot be undone."),
    ("battery", "Battery life",
     "The battery lasts about ten hours; dim the screen and turn off location services to make "
     "it last longer."),
    ("overheat", "Device getting hot",
     "If the device gets hot, remove its case, keep it out of the sun and close apps that run "
     "in the background."),
    ("wifi", "Wireless network trouble",
     "If the wireless network drops, move closer to the router, restart it, and forget and "
     "rejoin the network."),
    ("printer", "Printer setup",
     "Add a printer from Devices: it must be on the same network; install its driver if it is "
     "not found."),
    ("backup", "Backups",
     "Backups run every night at two o'clock and keep thirty days of history; restore any day "
     "from the Backups page."),
    ("darkmode", "Display themes",
     "Switch between the light and the dark theme in Appearance; the app can follow the system "
     "setting."),
    ("language", "Changing the language",
     "Pick the interface language in Preferences; the change applies after the app restarts."),
    ("timezone", "Time zone",
     "Dates are shown in the time zone set in Preferences; meetings are converted for every "
     "attendee."),
    ("share", "Sharing documents",
     "Share a document by email or by link; links can expire and can require a passcode."),
    ("storage", "Storage plans",
     "The free plan holds five gigabytes; paid plans hold one or two terabytes and can be "
     "changed any time."),
    ("keyboard", "Keyboard shortcuts",
     "Press Control and K to open the command palette; the full list of shortcuts is in Help."),
]  # fmt: skip

PARAPHRASES = [
    ("I can't remember my login secret, how do I get back in?", "password"),
    ("how to unsubscribe and stop being charged monthly", "cancel"),
    ("can I get reimbursed if I send the item back", "refund"),
    ("how long until my package is delivered", "shipping"),
    ("where do I find a bill for my purchase", "invoice"),
    ("require an extra confirmation from my mobile when logging on", "twofactor"),
    ("my phone runs out of charge too quickly", "battery"),
    ("the gadget becomes very warm", "overheat"),
    ("internet connection keeps disconnecting", "wifi"),
    ("recover a file from last week", "backup"),
    ("night colors for the screen", "darkmode"),
    ("permanently remove my profile", "delete"),
]

BOTH = [
    ("forgot password", "password"),
    ("cancel subscription", "cancel"),
    ("printer driver", "printer"),
    ("keyboard shortcuts", "keyboard"),
    ("storage bucket images failed to load", "inc-58321"),
    ("change interface language", "language"),
    ("share a document by link", "share"),
    ("export data archive", "export"),
]


def build() -> dict:
    docs: list[dict[str, str]] = []
    for code, cause in zip(ERROR_CODES, ERROR_CAUSES, strict=True):
        docs.append(
            {
                "id": code.lower(),
                "title": f"Error {code}",
                "content": f"Error {code} means {cause}, then upload again.",
            }
        )
    for code, (part, when) in zip(PART_CODES, PARTS, strict=True):
        docs.append(
            {
                "id": code.lower(),
                "title": f"Part {code}",
                "content": f"{code} is the {part} of the pump. Replace it {when}.",
            }
        )
    for name, field, work in PEOPLE:
        docs.append(
            {
                "id": name.split()[1].lower(),
                "title": f"Dr. {name}",
                "content": f"Dr. {name} leads the {field} research group and runs the {work}.",
            }
        )
    for code, what, fix in INCIDENTS:
        docs.append(
            {
                "id": code.lower(),
                "title": f"Incident {code}",
                "content": f"Incident {code}: {what}. Resolved by {fix}.",
            }
        )
    for name, season, brings in RELEASES:
        docs.append(
            {
                "id": name.lower(),
                "title": f"The {name} release",
                "content": f"{name} is the codename of the {season} release. It brings {brings}.",
            }
        )
    for key, title, content in HELP:
        docs.append({"id": key, "title": title, "content": content})
    queries = []
    for code in ERROR_CODES[::2]:
        queries.append({"class": "exact", "query": code, "relevant": code.lower()})
    for code in PART_CODES[1::2]:
        queries.append({"class": "exact", "query": code, "relevant": code.lower()})
    for name, _, _ in PEOPLE[::2]:
        surname = name.split()[1]
        queries.append({"class": "exact", "query": surname, "relevant": surname.lower()})
    for code, _, _ in INCIDENTS[1::2]:
        queries.append({"class": "exact", "query": code, "relevant": code.lower()})
    for name, _, _ in RELEASES[::2]:
        queries.append({"class": "exact", "query": name, "relevant": name.lower()})
    for query, relevant in PARAPHRASES:
        queries.append({"class": "paraphrase", "query": query, "relevant": relevant})
    for query, relevant in BOTH:
        queries.append({"class": "both", "query": query, "relevant": relevant})
    return {"about": __doc__.split("\n\n")[1].strip(), "documents": docs, "queries": queries}


if __name__ == "__main__":
    (HERE / "hybrid_set.json").write_text(json.dumps(build(), indent=1) + "\n")
