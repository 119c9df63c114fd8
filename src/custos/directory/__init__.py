"""The directory: principals (who asks), subjects (about whom) and tickets (why).

Files in the DESIGN.md format are read by :func:`read_directory_file` and merged into the
database by :meth:`DirectoryStore.merge`.
"""

from typing import TYPE_CHECKING

from custos.lazyface import lazy_face

if TYPE_CHECKING:  # the names as type checkers see them
    from custos.directory.bulk import (
        ImportReport as ImportReport,
    )
    from custos.directory.bulk import (
        PrunePlan as PrunePlan,
    )
    from custos.directory.bulk import (
        import_lines as import_lines,
    )
    from custos.directory.bulk import (
        plan_prune as plan_prune,
    )
    from custos.directory.bulk import (
        write_lines as write_lines,
    )
    from custos.directory.files import (
        merge_documents as merge_documents,
    )
    from custos.directory.files import (
        parse_text as parse_text,
    )
    from custos.directory.files import (
        read_directory_file as read_directory_file,
    )
    from custos.directory.model import (
        DirectoryDocument as DirectoryDocument,
    )
    from custos.directory.model import (
        MergeReport as MergeReport,
    )
    from custos.directory.model import (
        Principal as Principal,
    )
    from custos.directory.model import (
        Subject as Subject,
    )
    from custos.directory.model import (
        Ticket as Ticket,
    )
    from custos.directory.store import (
        DIRECTORY_EXPORTS as DIRECTORY_EXPORTS,
    )
    from custos.directory.store import (
        DirectoryChanges as DirectoryChanges,
    )
    from custos.directory.store import (
        DirectoryStore as DirectoryStore,
    )

__getattr__, __dir__, __all__ = lazy_face(
    __name__,
    {
        "bulk": ("ImportReport", "PrunePlan", "import_lines", "plan_prune", "write_lines"),
        "files": ("merge_documents", "parse_text", "read_directory_file"),
        "model": ("DirectoryDocument", "MergeReport", "Principal", "Subject", "Ticket"),
        "store": ("DIRECTORY_EXPORTS", "DirectoryChanges", "DirectoryStore"),
    },
)
