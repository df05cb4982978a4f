-- Why a charger's certificate request was rejected, or what became of the certificate.
ALTER TABLE certificate_requests ADD COLUMN reason TEXT;
ALTER TABLE certificate_requests ADD COLUMN certificate TEXT;
