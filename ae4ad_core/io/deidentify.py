"""De-identification of image metadata: which keys identify a person, a place, a device or a moment.

:func:`deidentify` drops them at any depth. The readers build their metadata from an allow-list and pass it
through :func:`deidentify` too, so identifiers only reach a caller under ``metadata["identifiers"]`` when the
caller asked for them (``include_identifiers=True``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["deidentify"]

# Keywords (lower case, no separators) that identify a person, a place, a device or a moment. Every keyword
# whose DICOM value representation is PN, DA, DT or TM, every instance UID and every private tag counts too.
_IDENTIFYING_KEYWORDS = frozenset(
    word.lower()
    for word in (
        "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
        "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime", "PatientBirthName", "PatientSex",
        "PatientAge", "PatientSize", "PatientWeight", "PatientAddress", "PatientMotherBirthName",
        "PatientTelephoneNumbers", "PatientReligiousPreference", "PatientComments", "PatientState",
        "EthnicGroup", "Occupation", "MilitaryRank", "BranchOfService", "MedicalRecordLocator",
        "CountryOfResidence", "RegionOfResidence", "AdditionalPatientHistory", "PregnancyStatus",
        "AccessionNumber", "IssuerOfAccessionNumberSequence", "InstitutionName", "InstitutionAddress",
        "InstitutionalDepartmentName", "InstitutionCodeSequence", "ReferringPhysicianName",
        "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers", "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy", "OperatorsName", "PhysiciansOfRecord", "RequestingPhysician",
        "RequestingService", "StudyID", "StationName", "DeviceSerialNumber", "DetectorID", "DeviceUID",
        "RequestAttributesSequence", "PerformedProcedureStepID", "ScheduledProcedureStepID",
        "RequestedProcedureID", "AdmissionID", "ImageComments", "StudyComments", "InterpretationText",
        "ContentCreatorName", "PersonName", "PersonAddress", "PersonTelephoneNumbers", "ResponsiblePerson",
        "ResponsibleOrganization", "Description", "AuxFile", "DbName", "Identifiers", "TextChunks",
    )
)  # fmt: skip
_IDENTIFYING_VRS = frozenset({"PN", "DA", "DT", "TM"})
_PUBLIC_UID_KEYWORDS = frozenset({"sopclassuid", "transfersyntaxuid", "mediastoragesopclassuid"})
_TAG_KEY_PATTERN = re.compile(r"^\(?([0-9a-fA-F]{4})[,\s]?([0-9a-fA-F]{4})\)?$")
_VR_BY_KEYWORD: dict[str, str] = {}


def deidentify(metadata: Mapping[str, Any]) -> dict:
    """Return a copy of ``metadata`` without identifying keys, at any depth.

    Dropped: the ``"identifiers"`` entry; names, IDs, addresses, institution, station, device serial number,
    accession and study numbers, age, sex, size and weight; every key naming a DICOM attribute whose value
    representation is PN (person), DA (date), DT (date-time) or TM (time); instance UIDs (SOP class and transfer
    syntax UIDs are kept); private tags. Keys may be DICOM keywords (``"PatientName"``), snake case
    (``"patient_name"``) or tags (``"(0010,0010)"``, ``"00100010"``).

    Parameters
    ----------
    metadata : mapping
        Metadata, possibly nested (dicts inside dicts or lists).

    Returns
    -------
    dict
        The cleaned copy; ``metadata`` itself is not changed.
    """
    clean: dict[str, Any] = {}
    for key, value in metadata.items():
        if _is_identifying_key(str(key)):
            continue
        clean[key] = _deidentify_value(value)
    return clean


def _vr_by_keyword() -> dict[str, str]:
    if not _VR_BY_KEYWORD:
        from pydicom.datadict import DicomDictionary

        _VR_BY_KEYWORD.update({entry[4].lower(): entry[0] for entry in DicomDictionary.values() if entry[4]})
    return _VR_BY_KEYWORD


def _is_identifying_key(key: str) -> bool:
    normalised = re.sub(r"[\s_\-]", "", key).lower()
    match = _TAG_KEY_PATTERN.match(key.strip())
    if match:
        group = int(match.group(1), 16)
        if group % 2 == 1:
            return True
        from pydicom.datadict import keyword_for_tag

        keyword = keyword_for_tag((group << 16) | int(match.group(2), 16))
        normalised = keyword.lower() if keyword else normalised
    if normalised in _IDENTIFYING_KEYWORDS:
        return True
    if normalised.endswith("uid") and normalised not in _PUBLIC_UID_KEYWORDS:
        return True
    return _vr_by_keyword().get(normalised, "") in _IDENTIFYING_VRS


def _deidentify_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return deidentify(value)
    if isinstance(value, (list, tuple)):
        return [_deidentify_value(item) for item in value]
    return value
