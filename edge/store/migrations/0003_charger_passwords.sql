-- OCPP security profiles 1 and 2: each charger's HTTP Basic password, hashed (scrypt).
ALTER TABLE chargers ADD COLUMN password_hash TEXT;
