"""Card readers: each driver turns what its device reports into raw UIDs; the
supervisor normalises them, drops repeats of a card held on the reader, and hands
`CardTap`s to the tap flow. A reader that goes away is reopened with back-off."""
