"""Import CGRateS tariff plans (its ``data/tariffplans/*`` CSV files) as the project's reference data.

    from rating.cgrates import ImportOptions, convert_tariff_plan, write_reference
    result = convert_tariff_plan("tariffplans/tutorial", ImportOptions(arithmetic="cgrates"))
    print(result.report.format_text())
    write_reference(result, "reference/")

Beam-free. How each CGRateS rule maps, and what cannot be reproduced: ``docs/cgrates.md``.

    tariff_files  read the CSV files (values still as written)
    values        durations, decimals, lists, rounding names
    timings       when a timing is active, on a one-minute grid
    zones         destinations -> one zone table (a zone per chain of matching prefixes)
    resolve       which destination rate CGRateS picks for a zone and a set of active timings
    bands         time bands (and holiday rules) of a version
    rates         a destination rate -> a project rate (steps, fees, rounding, cap)
    profiles      rating profiles -> rating plan chains per subject over time
    versions      a plan version: bands and explicit (service, zone, band) rates
    importer      the whole conversion, in memory
    writer        the reference directory on disk, checked by loading it
    report        what could not be expressed, and the decisions taken
"""

from rating.cgrates.importer import DEFAULT_CATEGORIES, ImportOptions, ImportResult, convert_tariff_plan
from rating.cgrates.report import Report
from rating.cgrates.writer import RECORD, check_target, write_reference

__all__ = ["DEFAULT_CATEGORIES", "ImportOptions", "ImportResult", "RECORD", "Report", "check_target",
           "convert_tariff_plan", "write_reference"]
