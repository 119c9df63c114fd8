"""The directory: principals (who asks), subjects (about whom) and tickets (why).

Files in the DESIGN.md format are read by :func:`read_directory_file` and merged into the
database by :meth:`DirectoryStore.merge`.
"""

from custos.directory.bulk import ImportReport, PrunePlan, import_lines, plan_prune, write_lines
from custos.directory.files import merge_documents, parse_text, read_directory_file
from custos.directory.model import DirectoryDocument, MergeReport, Principal, Subject, Ticket
from custos.directory.store import DIRECTORY_EXPORTS, DirectoryChanges, DirectoryStore

__all__ = [
    "DIRECTORY_EXPORTS",
    "DirectoryChanges",
    "DirectoryDocument",
    "DirectoryStore",
    "ImportReport",
    "MergeReport",
    "Principal",
    "PrunePlan",
    "Subject",
    "Ticket",
    "import_lines",
    "merge_documents",
    "parse_text",
    "plan_prune",
    "read_directory_file",
    "write_lines",
]
