"""A hostile modality worklist SCP (pynetdicom, in a thread): it answers whatever the
test gives it, however malformed, as a RIS on the LAN could (issue 25)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date

from helpers import free_port
from pydicom import Dataset, config
from pydicom.dataelem import DataElement
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind

# Elements are built without pydicom's value checks: what a hostile peer sends is
# exactly what it chose, not what pydicom would let a well-behaved program write.
RAW = config.IGNORE


def raw_entry(
    *,
    patient_id: str = "P-1",
    name: str = "Banda^Amina",
    day: date | str,
    time: str = "0930",
    modality: str = "OP",
    station: str = "FUNDUSCAM",
    accession: str = "ACC-1",
    description: str = "OP screening",
    study_uid: str | None = None,
    birth_date: str = "19700101",
    sex: str = "F",
    charset: str | None = None,
) -> Dataset:
    """One worklist answer with every value exactly as given (no VR checks)."""
    ds = Dataset()

    def put(target: Dataset, tag: int, vr: str, value: str) -> None:
        target.add(DataElement(tag, vr, value, validation_mode=RAW))

    if charset:
        put(ds, 0x00080005, "CS", charset)
    put(ds, 0x00080050, "SH", accession)
    put(ds, 0x00100010, "PN", name)
    put(ds, 0x00100020, "LO", patient_id)
    put(ds, 0x00100030, "DA", birth_date)
    put(ds, 0x00100040, "CS", sex)
    put(ds, 0x0020000D, "UI", study_uid or generate_uid())
    put(ds, 0x00321060, "LO", description)
    step = Dataset()
    put(step, 0x00400001, "AE", station)
    put(step, 0x00400002, "DA", day if isinstance(day, str) else day.strftime("%Y%m%d"))
    put(step, 0x00400003, "TM", time)
    put(step, 0x00080060, "CS", modality)
    put(step, 0x00400007, "LO", description)
    ds.ScheduledProcedureStepSequence = [step]
    return ds


class HostileRis:
    """``answers(asked_day)`` gives the datasets to send for each C-FIND."""

    def __init__(self, answers: Callable[[date], Iterable[Dataset]], aet: str = "RIS") -> None:
        self.answers = answers
        self.sent = 0
        self.port = free_port()
        self.address = f"{aet}@127.0.0.1:{self.port}"
        self.ae = AE(ae_title=aet)
        self.ae.add_supported_context(ModalityWorklistInformationFind)
        self.server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_FIND, self._find)]
        )

    def _find(self, event):
        asked = event.identifier.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate
        day = date(int(asked[:4]), int(asked[4:6]), int(asked[6:]))
        for answer in self.answers(day):
            if event.is_cancelled or not event.assoc.is_established:
                return  # the box stopped it
            self.sent += 1
            yield 0xFF00, answer
        yield 0x0000, None

    def stop(self) -> None:
        self.server.shutdown()
