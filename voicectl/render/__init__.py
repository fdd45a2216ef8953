"""Everything a person reads: tables and progress lines. Commands return data; this prints it."""
