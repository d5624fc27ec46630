"""pint's answers for the units the shipped protocols and records use (generated: scripts/units_table.py).

:func:`escalation_rules.guards.parse_unit` and :func:`~escalation_rules.guards.unit_factor` look here
first, so screening with these units needs no pint (about half a second to import and set up); any
other unit is asked of pint.  tests/test_guards.py checks every entry against pint.
"""

PINT_VERSION = '0.25.3'

UNITS: dict[str, tuple[str, str]] = {
    '%': ('percent', 'dimensionless'),
    '1': ('dimensionless', 'dimensionless'),
    'IU/mL': ('international_unit / milliliter', '1 / [length] ** 3'),
    'U/L': ('enzyme_unit / liter', '[substance] / [time] / [length] ** 3'),
    'dimensionless': ('dimensionless', 'dimensionless'),
    'g': ('gram', '[mass]'),
    'g/mol': ('gram / mole', '[mass] / [substance]'),
    'international_unit / microliter': ('international_unit / microliter', '1 / [length] ** 3'),
    'kg': ('kilogram', '[mass]'),
    'lb': ('pound', '[mass]'),
    'mL/min': ('milliliter / minute', '[length] ** 3 / [time]'),
    'mg/L': ('milligram / liter', '[mass] / [length] ** 3'),
    'mg/dL': ('milligram / deciliter', '[mass] / [length] ** 3'),
    'mg/dl': ('milligram / deciliter', '[mass] / [length] ** 3'),
    'mmol/L': ('millimole / liter', '[substance] / [length] ** 3'),
    'month': ('month', '[time]'),
    'months': ('month', '[time]'),
    'umol/L': ('micromole / liter', '[substance] / [length] ** 3'),
    'week': ('week', '[time]'),
    'weeks': ('week', '[time]'),
    'year': ('year', '[time]'),
    'years': ('year', '[time]'),
    'µmol/L': ('micromole / liter', '[substance] / [length] ** 3'),
}

FACTORS: dict[tuple[str, str, str | None], float] = {
    ('%', '%', None): 1.0,
    ('%', 'dimensionless', None): 0.01,
    ('1', '%', None): 100.0,
    ('1', 'dimensionless', None): 1.0,
    ('IU/mL', 'IU/mL', None): 1.0,
    ('U/L', 'U/L', None): 1.0,
    ('g', 'kg', None): 0.001,
    ('g/mol', 'g/mol', None): 1.0,
    ('international_unit / microliter', 'IU/mL', None): 1000.0,
    ('kg', 'kg', None): 1.0,
    ('lb', 'kg', None): 0.4535923700000001,
    ('mL/min', 'mL/min', None): 1.0,
    ('mg/L', 'mg/dL', '113.12 g/mol'): 0.1,
    ('mg/dL', 'mg/dL', '113.12 g/mol'): 1.0,
    ('mg/dL', 'mg/dL', '584.66 g/mol'): 1.0,
    ('mg/dl', 'mg/dL', '113.12 g/mol'): 1.0,
    ('mg/dl', 'mg/dL', '584.66 g/mol'): 1.0,
    ('mmol/L', 'mg/dL', '113.12 g/mol'): 11.312000000000001,
    ('months', 'week', None): 4.348214285714286,
    ('months', 'year', None): 0.08333333333333333,
    ('umol/L', 'mg/dL', '113.12 g/mol'): 0.011312,
    ('umol/L', 'mg/dL', '584.66 g/mol'): 0.05846599999999999,
    ('weeks', 'week', None): 1.0,
    ('weeks', 'year', None): 0.019164955509924708,
    ('µmol/L', 'mg/dL', '113.12 g/mol'): 0.011312,
    ('µmol/L', 'mg/dL', '584.66 g/mol'): 0.05846599999999999,
}
