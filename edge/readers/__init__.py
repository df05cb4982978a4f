"""Card readers (NFC, serial, keyboard-wedge) that turn a tap into a CardTap."""
