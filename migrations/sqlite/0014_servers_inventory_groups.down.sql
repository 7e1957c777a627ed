ALTER TABLE servers DROP COLUMN inventory_groups;
